//! The rewrite a gateway applies to a request before forwarding it upstream
//! (docs/design/metered-streaming.md §4.2): bound the tokens the upstream may generate, and ask
//! for usage in a stream. Every other field is forwarded untouched.

use serde_json::{Map, Value};

/// What [`prepare_upstream_request`] found and changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRewrite {
    /// The `model` of the request, if it is a string.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// The client had set `stream_options.include_usage: true` itself (so a usage-only chunk is
    /// to be forwarded to it, not consumed).
    pub client_asked_usage: bool,
    /// The token bound now in the request: the tighter of the client's limits and the bound.
    pub max_tokens: u64,
    /// A limit was lowered or added.
    pub clamped: bool,
}

/// Why a request cannot be rewritten (answer `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The body is not a JSON object.
    #[error("the request body is not a JSON object")]
    NotAnObject,
    /// A field has the wrong type.
    #[error("`{field}` must be {expected}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

const TOKEN_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// The prices that decide how many completion tokens a request's hold affords
/// (docs/design/metered-streaming.md §4.2): the route's `base` and its per-`unit_size` token
/// prices. Plain integers, so that this crate needs no payment types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenPrices {
    /// Charged per successful request, atomic units.
    pub base: u64,
    /// Atomic units per `unit_size` prompt tokens.
    pub price_in: u64,
    /// Atomic units per `unit_size` completion tokens.
    pub price_out: u64,
    /// Tokens the prices are for (e.g. 1 000); 0 is read as 1.
    pub unit_size: u32,
}

impl TokenPrices {
    /// The most completion tokens a request holding `hold` can pay for after `base` and its
    /// `prompt_tokens`: `floor((hold − base − ceil(prompt_tokens·price_in/unit_size)) ·
    /// unit_size / price_out)`, the subtractions saturating at 0. `None` when completion tokens
    /// are free (`price_out` 0): the hold bounds nothing. `Some(0)` is the caller's
    /// `max_tokens_unaffordable`.
    ///
    /// With this bound, `base + ceil((prompt_tokens·price_in + n·price_out)/unit_size) ≤ hold`
    /// for every `n` up to it, so an answer within it is never cut at the hold.
    pub fn affordable_completion_tokens(&self, hold: u64, prompt_tokens: u64) -> Option<u64> {
        if self.price_out == 0 {
            return None;
        }
        let unit_size = u128::from(self.unit_size.max(1));
        let prompt_cost = u128::from(prompt_tokens)
            .saturating_mul(u128::from(self.price_in))
            .div_ceil(unit_size);
        let left = u128::from(hold)
            .saturating_sub(u128::from(self.base))
            .saturating_sub(prompt_cost);
        let tokens = left
            .saturating_mul(unit_size)
            .checked_div(u128::from(self.price_out))
            .unwrap_or(0);
        Some(u64::try_from(tokens).unwrap_or(u64::MAX))
    }
}

/// Rewrite a `/v1/chat/completions` or `/v1/completions` request body in place:
///
/// - each of `max_tokens` / `max_completion_tokens` present is lowered to `bound` if above it;
///   if neither is present (or both are `null`), `max_tokens` is set to `bound` (the name every
///   upstream understands);
/// - when `stream` is `true`, `stream_options.include_usage` is set to `true` (creating
///   `stream_options` if needed), and whether the client had asked for it is reported.
///
/// A `bound` of 0 is applied as is; refusing it (`max_tokens_unaffordable`) is the caller's job.
pub fn prepare_upstream_request(
    body: &mut Value,
    bound: u64,
) -> Result<RequestRewrite, RewriteError> {
    rewrite_for_upstream(body, Some(bound))
}

/// [`prepare_upstream_request`] with an optional bound: `None` leaves the token limits as the
/// client sent them (and adds none); [`RequestRewrite::max_tokens`] is then the client's limit,
/// or `u64::MAX` when it set none.
pub fn rewrite_for_upstream(
    body: &mut Value,
    bound: Option<u64>,
) -> Result<RequestRewrite, RewriteError> {
    let request = body.as_object_mut().ok_or(RewriteError::NotAnObject)?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => {
            return Err(RewriteError::InvalidField {
                field: "stream",
                expected: "a boolean",
            })
        }
    };

    let mut limit: Option<u64> = None;
    let mut clamped = false;
    let mut present = false;
    for field in TOKEN_FIELDS {
        let value = match request.get(field) {
            None | Some(Value::Null) => continue,
            Some(value) => value.as_u64().ok_or(RewriteError::InvalidField {
                field,
                expected: "a non-negative integer",
            })?,
        };
        present = true;
        let kept = bound.map_or(value, |bound| value.min(bound));
        if kept != value {
            request.insert(field.to_owned(), Value::from(kept));
            clamped = true;
        }
        limit = Some(limit.map_or(kept, |l| l.min(kept)));
    }
    if let (false, Some(bound)) = (present, bound) {
        request.insert("max_tokens".to_owned(), Value::from(bound));
        clamped = true;
    }

    let mut client_asked_usage = false;
    if stream {
        let options = request
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if options.is_null() {
            *options = Value::Object(Map::new());
        }
        let options = options.as_object_mut().ok_or(RewriteError::InvalidField {
            field: "stream_options",
            expected: "an object",
        })?;
        client_asked_usage = match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(asked)) => *asked,
            Some(_) => {
                return Err(RewriteError::InvalidField {
                    field: "stream_options.include_usage",
                    expected: "a boolean",
                })
            }
        };
        options.insert("include_usage".to_owned(), Value::Bool(true));
    }

    Ok(RequestRewrite {
        model,
        stream,
        client_asked_usage,
        max_tokens: limit.or(bound).unwrap_or(u64::MAX),
        clamped,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn max_tokens_is_clamped_and_include_usage_forced_when_streaming() {
        let mut body = json!({"model": "m", "messages": [], "stream": true, "max_tokens": 500,
                              "max_completion_tokens": 50, "temperature": 0.5});
        let rewrite = prepare_upstream_request(&mut body, 100).unwrap();
        assert_eq!(
            rewrite,
            RequestRewrite {
                model: Some("m".into()),
                stream: true,
                client_asked_usage: false,
                max_tokens: 50,
                clamped: true
            }
        );
        assert_eq!(
            body,
            json!({"model": "m", "messages": [], "stream": true, "max_tokens": 100,
                   "max_completion_tokens": 50, "temperature": 0.5,
                   "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn an_absent_limit_is_set_and_a_client_asking_for_usage_is_noticed() {
        let mut body = json!({"model": "m", "prompt": "x", "stream": true, "max_tokens": null,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
        let rewrite = prepare_upstream_request(&mut body, 64).unwrap();
        assert!(rewrite.client_asked_usage && rewrite.clamped && rewrite.stream);
        assert_eq!(rewrite.max_tokens, 64);
        assert_eq!(body["max_tokens"], json!(64));
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true, "continuous_usage_stats": true})
        );

        let mut body = json!({"model": "m", "messages": [], "stream": true,
                              "stream_options": {"include_usage": false}, "max_tokens": 3});
        let rewrite = prepare_upstream_request(&mut body, 64).unwrap();
        assert!(!rewrite.client_asked_usage && !rewrite.clamped);
        assert_eq!(rewrite.max_tokens, 3);
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
    }

    #[test]
    fn a_non_stream_request_keeps_its_stream_options_untouched() {
        let mut body = json!({"model": "m", "messages": [], "max_completion_tokens": 10});
        let rewrite = prepare_upstream_request(&mut body, 64).unwrap();
        assert!(!rewrite.stream && !rewrite.clamped);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [], "max_completion_tokens": 10})
        );
    }

    #[test]
    fn without_a_bound_the_clients_limits_are_kept_and_usage_still_asked() {
        let mut body = json!({"model": "m", "messages": [], "stream": true});
        let rewrite = rewrite_for_upstream(&mut body, None).unwrap();
        assert!(!rewrite.clamped && rewrite.stream && !rewrite.client_asked_usage);
        assert_eq!(rewrite.max_tokens, u64::MAX);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [], "stream": true,
                   "stream_options": {"include_usage": true}})
        );
        let mut body = json!({"model": "m", "messages": [], "max_tokens": 7});
        assert_eq!(rewrite_for_upstream(&mut body, None).unwrap().max_tokens, 7);
        assert_eq!(body["max_tokens"], json!(7));
    }

    #[test]
    fn the_affordable_tokens_keep_the_charge_within_the_hold() {
        let prices = TokenPrices {
            base: 100,
            price_in: 0,
            price_out: 2_000,
            unit_size: 1_000,
        };
        // (1 000 − 100) · 1 000 / 2 000 = 450 tokens.
        assert_eq!(prices.affordable_completion_tokens(1_000, 50), Some(450));
        assert_eq!(prices.affordable_completion_tokens(100, 0), Some(0));
        assert_eq!(prices.affordable_completion_tokens(50, 0), Some(0));
        let with_input = TokenPrices {
            price_in: 1_000,
            ..prices
        };
        // The prompt's 301 tokens cost ceil(301 · 1 000 / 1 000) = 301: (1 000 − 100 − 301) / 2.
        assert_eq!(
            with_input.affordable_completion_tokens(1_000, 301),
            Some(299)
        );
        let free_output = TokenPrices {
            price_out: 0,
            ..prices
        };
        assert_eq!(free_output.affordable_completion_tokens(1_000, 5), None);
        let extreme = TokenPrices {
            base: 0,
            price_in: u64::MAX,
            price_out: 1,
            unit_size: u32::MAX,
        };
        assert_eq!(
            extreme.affordable_completion_tokens(u64::MAX, 0),
            Some(u64::MAX)
        );
        assert_eq!(
            extreme.affordable_completion_tokens(u64::MAX, u64::MAX),
            Some(0)
        );
        // Exhaustively on small numbers: the charge of every affordable answer is within the
        // hold.
        let small = TokenPrices {
            base: 3,
            price_in: 7,
            price_out: 5,
            unit_size: 4,
        };
        for hold in 0..60u64 {
            for prompt in 0..10u64 {
                let n = small.affordable_completion_tokens(hold, prompt).unwrap();
                let charge = |n: u64| {
                    small.base + (prompt * small.price_in + n * small.price_out).div_ceil(4)
                };
                if hold >= small.base + (prompt * 7).div_ceil(4) {
                    assert!(charge(n) <= hold, "hold {hold} prompt {prompt} n {n}");
                } else {
                    assert_eq!(n, 0);
                }
            }
        }
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        for (mut body, field) in [
            (json!({"stream": "yes"}), Some("stream")),
            (json!({"max_tokens": -1}), Some("max_tokens")),
            (
                json!({"max_completion_tokens": 1.5}),
                Some("max_completion_tokens"),
            ),
            (
                json!({"stream": true, "stream_options": 3}),
                Some("stream_options"),
            ),
            (
                json!({"stream": true, "stream_options": {"include_usage": 1}}),
                Some("stream_options.include_usage"),
            ),
            (json!([1, 2]), None),
        ] {
            let error = prepare_upstream_request(&mut body, 8).unwrap_err();
            match field {
                Some(f) => {
                    assert!(matches!(error, RewriteError::InvalidField { field, .. } if field == f))
                }
                None => assert_eq!(error, RewriteError::NotAnObject),
            }
        }
    }
}
