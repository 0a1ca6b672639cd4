//! Metered requests: the units an answer used, from the handler's report or the layer's own count.

use axum::http::HeaderMap;
use x402pp_openai::{json_body_usage, StreamUsage};
use x402pp_protocol::{Metering, UnitKind};

use super::ReportedUsage;

/// Counts a request's units, in order of precedence:
///
/// 1. a route metered in **bytes**: the request body in, the response body out (what the agent
///    can count too; no report can change it);
/// 2. the handler's [`ReportedUsage`](super::ReportedUsage), last report;
/// 3. the answer itself: an OpenAI-compatible JSON body's `usage` (or its text's length / 4,
///    estimated), an SSE body's usage chunk (or its content deltas, estimated);
/// 4. nothing: 0 units, estimated.
pub(super) fn units_of_answer(
    metering: &Metering,
    reported: Option<ReportedUsage>,
    input_bytes: u64,
    headers: &HeaderMap,
    body: &[u8],
) -> ReportedUsage {
    if metering.unit_kind == UnitKind::Bytes {
        return ReportedUsage {
            units_in: input_bytes,
            units_out: u64::try_from(body.len()).unwrap_or(u64::MAX),
            estimated: false,
        };
    }
    if let Some(reported) = reported {
        return reported;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let counted = if content_type.starts_with("text/event-stream") {
        let mut counter = StreamUsage::new();
        counter.feed_bytes(body);
        Some(counter.usage())
    } else if content_type.starts_with("application/json") {
        json_body_usage(body).ok()
    } else {
        None
    };
    counted.map_or(
        ReportedUsage {
            units_in: 0,
            units_out: 0,
            estimated: true,
        },
        |usage| ReportedUsage {
            units_in: usage.prompt_tokens,
            units_out: usage.completion_tokens,
            estimated: usage.estimated,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Metering {
        Metering {
            unit_price_in: 0,
            unit_price_out: 2_000,
            unit_size: 1_000,
            max_per_request: 1_000,
            unit_kind: UnitKind::Tokens,
        }
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers
    }

    #[test]
    fn a_bytes_route_counts_the_bodies_whatever_the_handler_reports() {
        let bytes = Metering {
            unit_kind: UnitKind::Bytes,
            ..tokens()
        };
        let reported = ReportedUsage {
            units_in: 1,
            units_out: 1,
            estimated: false,
        };
        let usage = units_of_answer(&bytes, Some(reported), 12, &HeaderMap::new(), b"hello");
        assert_eq!(
            (usage.units_in, usage.units_out, usage.estimated),
            (12, 5, false)
        );
    }

    #[test]
    fn the_handlers_report_wins_over_the_answers_usage() {
        let reported = ReportedUsage {
            units_in: 3,
            units_out: 9,
            estimated: false,
        };
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let usage = units_of_answer(&tokens(), Some(reported), 0, &json_headers(), body);
        assert_eq!(usage, reported);
    }

    #[test]
    fn without_a_report_an_openai_answers_usage_is_taken() {
        let body = br#"{"usage":{"prompt_tokens":4,"completion_tokens":7,"total_tokens":11}}"#;
        let usage = units_of_answer(&tokens(), None, 0, &json_headers(), body);
        assert_eq!(
            (usage.units_in, usage.units_out, usage.estimated),
            (4, 7, false)
        );
        let usage = units_of_answer(&tokens(), None, 0, &HeaderMap::new(), b"plain");
        assert_eq!(
            (usage.units_in, usage.units_out, usage.estimated),
            (0, 0, true)
        );
    }
}
