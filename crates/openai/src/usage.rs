//! Token usage of an answer: counted over a stream of chunks ([`StreamUsage`]) or read from a
//! non-stream body ([`json_body_usage`]).
//!
//! Rules (docs/design/metered-streaming.md §3.3):
//!
//! - a chunk with a non-null `usage` object sets the usage; the **last** one wins (OpenAI and
//!   vLLM send it in a final chunk with `choices: []` when `stream_options.include_usage`;
//!   llama.cpp with its last chunk; vLLM's `continuous_usage_stats` in every chunk, cumulative);
//! - without any, the completion tokens are the content-bearing deltas: one per choice per chunk
//!   whose `delta` has a non-empty `content`, `reasoning_content`, `reasoning` or `tool_calls`,
//!   or (`/v1/completions`) whose `text` is non-empty; the prompt tokens are 0 and the result is
//!   flagged `estimated`;
//! - `data: [DONE]` ends the stream: later events are not counted; events with an `event` name
//!   other than `message` (an `x402-receipt`…) and data that is not JSON are ignored;
//! - an event dropped as too large by the parser ends the counting (the result is `estimated`).

use serde_json::Value;

use crate::sse::{SseError, SseEvent, SseParser};
use crate::types::Usage;

/// Token counts of an answer, and whether they were estimated rather than reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCount {
    /// Prompt tokens (0 when estimated from a stream).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Not reported by the model: counted from deltas or characters.
    pub estimated: bool,
}

/// What one event of an OpenAI stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `data: [DONE]`.
    Done,
    /// `choices` empty (or absent) and a `usage`: the final chunk of `include_usage`.
    UsageOnly,
    /// A chunk with choices.
    Chunk {
        /// Its content-bearing deltas (one per choice at most).
        content_deltas: u64,
        /// It carries a `usage` too (llama.cpp's last chunk, vLLM's continuous stats).
        has_usage: bool,
    },
    /// Data that is not a JSON object.
    NotJson,
    /// Not counted: a named event, or an event after `[DONE]` or after the counting ended.
    Ignored,
}

impl ChunkKind {
    /// Whether this event moved the counter (content or usage): the "first token" for timing.
    pub fn advances(&self) -> bool {
        match self {
            ChunkKind::UsageOnly => true,
            ChunkKind::Chunk {
                content_deltas,
                has_usage,
            } => *content_deltas > 0 || *has_usage,
            ChunkKind::Done | ChunkKind::NotJson | ChunkKind::Ignored => false,
        }
    }
}

/// The usage of an answer streamed as OpenAI chunks, counted incrementally.
#[derive(Debug, Clone, Default)]
pub struct StreamUsage {
    parser: SseParser,
    reported: Option<Usage>,
    deltas: u64,
    done: bool,
    broken: bool,
}

impl StreamUsage {
    /// A counter with a default [`SseParser`] (events bounded to 1 MiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter whose parser bounds each event to `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        StreamUsage {
            parser: SseParser::with_max_event_bytes(max_event_bytes),
            ..Self::default()
        }
    }

    /// Feed the next bytes of the stream; returns whether they advanced the count.
    pub fn feed_bytes(&mut self, bytes: &[u8]) -> bool {
        if self.done || self.broken {
            return false;
        }
        let mut advanced = false;
        for event in self.parser.feed(bytes) {
            match event {
                Ok(event) => advanced |= self.feed_event(&event).advances(),
                Err(error) => self.feed_error(&error),
            }
        }
        advanced
    }

    /// Count one event parsed elsewhere (a gateway that also inspects the events).
    pub fn feed_event(&mut self, event: &SseEvent) -> ChunkKind {
        if self.done || self.broken {
            return ChunkKind::Ignored;
        }
        let (kind, usage) = inspect(event);
        match kind {
            ChunkKind::Done => self.done = true,
            ChunkKind::Chunk { content_deltas, .. } => {
                self.deltas = self.deltas.saturating_add(content_deltas);
            }
            ChunkKind::UsageOnly | ChunkKind::NotJson | ChunkKind::Ignored => {}
        }
        if usage.is_some() {
            self.reported = usage;
        }
        kind
    }

    /// A parse error of the stream: the counting ends here.
    pub fn feed_error(&mut self, _error: &SseError) {
        self.broken = true;
    }

    /// The usage so far: the last reported one, else the counted deltas (estimated).
    pub fn usage(&self) -> UsageCount {
        match self.reported {
            Some(usage) => UsageCount {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                estimated: self.broken,
            },
            None => UsageCount {
                prompt_tokens: 0,
                completion_tokens: self.deltas,
                estimated: true,
            },
        }
    }

    /// The last `usage` a chunk carried.
    pub fn reported(&self) -> Option<Usage> {
        self.reported
    }

    /// Content-bearing deltas counted so far.
    pub fn counted_deltas(&self) -> u64 {
        self.deltas
    }

    /// `data: [DONE]` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The counting ended on an oversized event.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// What an event of an OpenAI stream is (see [`ChunkKind`]), without counting it.
pub fn classify(event: &SseEvent) -> ChunkKind {
    inspect(event).0
}

/// Whether an event is a usage-only chunk (`choices` empty or absent, and a `usage`), the chunk a
/// gateway consumes when it added `include_usage` and the client had not asked for it.
pub fn is_usage_only_chunk(event: &SseEvent) -> bool {
    classify(event) == ChunkKind::UsageOnly
}

fn inspect(event: &SseEvent) -> (ChunkKind, Option<Usage>) {
    if !event.is_message() {
        return (ChunkKind::Ignored, None);
    }
    if event.is_done() {
        return (ChunkKind::Done, None);
    }
    let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(&event.data) else {
        return (ChunkKind::NotJson, None);
    };
    let usage = chunk.get("usage").and_then(usage_of);
    let choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if choices.is_empty() && usage.is_some() {
        return (ChunkKind::UsageOnly, usage);
    }
    let content_deltas = choices.iter().filter(|c| bears_content(c)).count();
    (
        ChunkKind::Chunk {
            content_deltas: u64::try_from(content_deltas).unwrap_or(u64::MAX),
            has_usage: usage.is_some(),
        },
        usage,
    )
}

fn non_empty_str(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn bears_content(choice: &Value) -> bool {
    if let Some(delta) = choice.get("delta") {
        non_empty_str(delta.get("content"))
            || non_empty_str(delta.get("reasoning_content"))
            || non_empty_str(delta.get("reasoning"))
            || delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|calls| !calls.is_empty())
    } else {
        non_empty_str(choice.get("text"))
    }
}

/// A `usage` object with at least one of `prompt_tokens`, `completion_tokens` as a number.
fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.as_object()?;
    let prompt = usage.get("prompt_tokens").and_then(Value::as_u64);
    let completion = usage.get("completion_tokens").and_then(Value::as_u64);
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let mut counted = Usage::new(prompt.unwrap_or(0), completion.unwrap_or(0));
    if let Some(total) = usage.get("total_tokens").and_then(Value::as_u64) {
        counted.total_tokens = total;
    }
    Some(counted)
}

/// Why a non-stream body has no usage to read.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The body is not JSON.
    #[error("the answer is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("the answer is not a JSON object")]
    NotAnObject,
}

/// The usage of a non-stream `chat.completion` / `text_completion` body: its `usage`, else
/// `ceil(characters of the choices' content / 4)` completion tokens, 0 prompt tokens, estimated.
pub fn json_body_usage(body: &[u8]) -> Result<UsageCount, UsageError> {
    let Value::Object(answer) = serde_json::from_slice::<Value>(body)? else {
        return Err(UsageError::NotAnObject);
    };
    if let Some(usage) = answer.get("usage").and_then(usage_of) {
        return Ok(UsageCount {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            estimated: false,
        });
    }
    let mut chars: u64 = 0;
    let mut add = |value: Option<&Value>| {
        let n = match value {
            Some(Value::String(text)) => text.chars().count(),
            // Array contents: the `text` of each part.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|t| t.chars().count())
                .fold(0usize, usize::saturating_add),
            _ => 0,
        };
        chars = chars.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    };
    for choice in answer
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        add(choice.get("text"));
        if let Some(message) = choice.get("message") {
            add(message.get("content"));
            add(message.get("reasoning_content"));
        }
    }
    Ok(UsageCount {
        prompt_tokens: 0,
        completion_tokens: chars.div_ceil(4),
        estimated: true,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    use super::*;
    use crate::sse::{data_frame, done_frame, event_frame};
    use serde_json::json;

    fn chunk(content: &str) -> String {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        .to_string()
    }

    fn stream(frames: &[String]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| data_frame(f).to_vec())
            .chain(done_frame().to_vec())
            .collect()
    }

    #[test]
    fn usage_from_a_final_usage_chunk_wins_over_counted_deltas() {
        let usage_chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
            "model": "m", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
        .to_string();
        let bytes = stream(&[
            json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}).to_string(),
            chunk("a"),
            chunk(" b"),
            chunk(" c"),
            usage_chunk,
        ]);
        let mut counter = StreamUsage::new();
        for piece in bytes.chunks(7) {
            counter.feed_bytes(piece);
        }
        assert!(counter.is_done());
        assert_eq!(counter.counted_deltas(), 3);
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 11,
                completion_tokens: 5,
                estimated: false
            }
        );
    }

    #[test]
    fn the_last_usage_wins_when_several_chunks_carry_one() {
        // vLLM `continuous_usage_stats`: cumulative usage in every chunk; llama.cpp: in the last.
        let with_usage = |content: &str, n: u64| {
            json!({"choices": [{"index": 0, "delta": {"content": content}}],
                   "usage": {"prompt_tokens": 4, "completion_tokens": n}})
            .to_string()
        };
        let mut counter = StreamUsage::new();
        assert!(counter.feed_bytes(&stream(&[with_usage("x", 1), with_usage("y", 2)])));
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 4,
                completion_tokens: 2,
                estimated: false
            }
        );
        assert_eq!(counter.reported().unwrap().total_tokens, 6);
    }

    #[test]
    fn without_usage_content_deltas_are_counted_and_flagged_estimated() {
        let mut counter = StreamUsage::new();
        let role =
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                .to_string();
        assert!(
            !counter.feed_bytes(&data_frame(&role)),
            "a role-only chunk is no token"
        );
        assert!(counter.feed_bytes(&data_frame(&chunk("hello"))));
        let two_choices = json!({"choices": [
            {"index": 0, "delta": {"content": " a"}},
            {"index": 1, "delta": {"tool_calls": [{"index": 0}]}},
            {"index": 2, "delta": {"reasoning_content": "hm"}},
            {"index": 3, "delta": {"content": null}}
        ]})
        .to_string();
        counter.feed_bytes(&data_frame(&two_choices));
        let text =
            json!({"choices": [{"index": 0, "text": "t"}, {"index": 1, "text": ""}]}).to_string();
        counter.feed_bytes(&data_frame(&text));
        let finish =
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string();
        counter.feed_bytes(&data_frame(&finish));
        // Not counted: comments, non-JSON data, named events.
        counter.feed_bytes(b": keep-alive\n\ndata: not json\n\n");
        counter.feed_bytes(&event_frame("x402-receipt", &chunk("zzz")));
        assert!(!counter.is_done());
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 0,
                completion_tokens: 5,
                estimated: true
            }
        );
        // After [DONE] nothing counts.
        counter.feed_bytes(&done_frame());
        counter.feed_bytes(&data_frame(&chunk("late")));
        assert!(counter.is_done());
        assert_eq!(counter.usage().completion_tokens, 5);
    }

    #[test]
    fn an_oversized_event_ends_the_counting() {
        let mut counter = StreamUsage::with_max_event_bytes(256);
        counter.feed_bytes(&data_frame(&chunk("a")));
        counter.feed_bytes(&data_frame(&chunk(&"x".repeat(300))));
        counter.feed_bytes(&data_frame(&chunk("b")));
        assert!(counter.is_broken());
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 0,
                completion_tokens: 1,
                estimated: true
            }
        );
    }

    #[test]
    fn a_usage_only_chunk_is_recognised() {
        let usage = json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3});
        let only = SseEvent::message(json!({"choices": [], "usage": usage}).to_string());
        assert!(is_usage_only_chunk(&only));
        let absent_choices = SseEvent::message(json!({"usage": usage}).to_string());
        assert!(is_usage_only_chunk(&absent_choices));
        let with_content = SseEvent::message(
            json!({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": usage})
                .to_string(),
        );
        assert!(!is_usage_only_chunk(&with_content));
        assert_eq!(
            classify(&with_content),
            ChunkKind::Chunk {
                content_deltas: 1,
                has_usage: true
            }
        );
        let null_usage = SseEvent::message(json!({"choices": [], "usage": null}).to_string());
        assert!(!is_usage_only_chunk(&null_usage));
        assert!(!is_usage_only_chunk(&SseEvent::message("[DONE]")));
        assert_eq!(classify(&SseEvent::message("[DONE]")), ChunkKind::Done);
        let named = SseEvent {
            event: Some("x402-receipt".into()),
            ..only.clone()
        };
        assert!(!is_usage_only_chunk(&named));
        assert_eq!(classify(&SseEvent::message("{")), ChunkKind::NotJson);
    }

    #[test]
    fn the_usage_of_a_json_body_is_read_or_estimated_from_characters() {
        let exact = json!({"object": "chat.completion", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}});
        assert_eq!(
            json_body_usage(exact.to_string().as_bytes()).unwrap(),
            UsageCount {
                prompt_tokens: 3,
                completion_tokens: 9,
                estimated: false
            }
        );
        let none = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "héllo"}},
            {"index": 1, "text": "abcd"}
        ]});
        assert_eq!(
            json_body_usage(none.to_string().as_bytes()).unwrap(),
            UsageCount {
                prompt_tokens: 0,
                completion_tokens: 3,
                estimated: true
            }
        );
        assert!(matches!(
            json_body_usage(b"not json"),
            Err(UsageError::NotJson(_))
        ));
        assert!(matches!(
            json_body_usage(b"[1]"),
            Err(UsageError::NotAnObject)
        ));
    }
}
