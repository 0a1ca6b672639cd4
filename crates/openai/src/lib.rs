//! Everything OpenAI-compatible that the x402++ reference provider and gateway share, with no
//! payment logic: request/answer types, server-sent events, usage counting, the gateway's request
//! rewrite and the `x402pp-toy-1` model.
//!
//! | module | what | main items |
//! |---|---|---|
//! | [`types`] | serde types of `POST /v1/chat/completions` and `POST /v1/completions`: requests (unknown fields kept in `extra`, forwarded untouched), answers, stream chunks, `usage` | [`ChatCompletionRequest`], [`CompletionRequest`], [`ChatCompletion`], [`ChatCompletionChunk`], [`TextCompletion`], [`Usage`] |
//! | [`sse`] | incremental WHATWG event-stream parser (input split anywhere, bounded memory) and frame writer | [`SseParser`], [`SseEvent`], [`data_frame`], [`event_frame`], [`done_frame`] |
//! | [`usage`] | usage of a streamed answer (last reported `usage` wins, else counted content deltas, flagged estimated), of a JSON answer, and usage-only chunk detection | [`StreamUsage`], [`UsageCount`], [`ChunkKind`], [`is_usage_only_chunk`], [`json_body_usage`] |
//! | [`rewrite`] | the gateway's rewrite: clamp `max_tokens`/`max_completion_tokens`, force `stream_options.include_usage` when streaming; the completion tokens a hold affords | [`prepare_upstream_request`], [`rewrite_for_upstream`], [`RequestRewrite`], [`TokenPrices`] |
//! | [`toy`] | `x402pp-toy-1`, the reference provider's deterministic model: one word = one token, non-stream answers and lazily produced SSE frames | [`toy::complete`], [`toy::stream`], [`toy::ToyStream`] |
//!
//! Nothing here panics on input from the network: parse failures are typed errors
//! ([`SseError`], [`UsageError`], [`RewriteError`]) or ignored events.

pub mod rewrite;
pub mod sse;
pub mod toy;
pub mod types;
pub mod usage;

pub use rewrite::{
    prepare_upstream_request, rewrite_for_upstream, RequestRewrite, RewriteError, TokenPrices,
};
pub use sse::{
    comment_frame, data_frame, done_frame, event_frame, SseError, SseEvent, SseParser, DONE,
    RECEIPT_EVENT, SESSION_STATUS_EVENT,
};
pub use types::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    ChunkChoice, CompletionRequest, ContentPart, Delta, MessageContent, Prompt, StreamOptions,
    TextChoice, TextCompletion, Usage, CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH,
};
pub use usage::{
    classify, is_usage_only_chunk, json_body_usage, ChunkKind, StreamUsage, UsageCount, UsageError,
};
