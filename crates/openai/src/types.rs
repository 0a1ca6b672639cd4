//! Serde types of the OpenAI-compatible endpoints `POST /v1/chat/completions` and
//! `POST /v1/completions`: requests, answers and stream chunks.
//!
//! Every struct keeps the fields it does not name in `extra` (`#[serde(flatten)]`), so a request
//! parsed and serialized again forwards `temperature`, `tools`, `seed`… untouched. Optional fields
//! absent from the input are absent from the output too (never `null`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `object` of a non-stream chat answer.
pub const CHAT_COMPLETION_OBJECT: &str = "chat.completion";
/// `object` of a chat stream chunk.
pub const CHAT_COMPLETION_CHUNK_OBJECT: &str = "chat.completion.chunk";
/// `object` of a `/v1/completions` answer and of its stream chunks.
pub const TEXT_COMPLETION_OBJECT: &str = "text_completion";

/// The path of the chat completions endpoint.
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// The path of the (legacy) text completions endpoint.
pub const COMPLETIONS_PATH: &str = "/v1/completions";

/// `stream_options` of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a final chunk with `choices: []` and `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options (`continuous_usage_stats` of vLLM…), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model asked for.
    #[serde(default)]
    pub model: String,
    /// The conversation.
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    /// Answer as a server-sent event stream of [`ChatCompletionChunk`]s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Upper bound of generated tokens (older name, still the most widely supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Upper bound of generated tokens (newer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Every other field (`temperature`, `tools`, test knobs…), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// `stream == Some(true)`.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// `stream_options.include_usage == Some(true)`.
    pub fn includes_usage(&self) -> bool {
        include_usage(self.stream_options.as_ref())
    }

    /// The tighter of `max_tokens` and `max_completion_tokens`, if either is set.
    pub fn token_limit(&self) -> Option<u64> {
        tighter(self.max_tokens, self.max_completion_tokens)
    }

    /// The text of every message, joined with `\n` (messages without text are skipped).
    pub fn prompt_text(&self) -> String {
        let texts: Vec<String> = self
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref().map(MessageContent::text))
            .collect();
        texts.join("\n")
    }
}

/// A `POST /v1/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model asked for.
    #[serde(default)]
    pub model: String,
    /// The prompt.
    #[serde(default)]
    pub prompt: Prompt,
    /// Answer as a server-sent event stream of [`TextCompletion`] chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Upper bound of generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Accepted by some servers on this endpoint too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    /// `stream == Some(true)`.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// `stream_options.include_usage == Some(true)`.
    pub fn includes_usage(&self) -> bool {
        include_usage(self.stream_options.as_ref())
    }

    /// The tighter of `max_tokens` and `max_completion_tokens`, if either is set.
    pub fn token_limit(&self) -> Option<u64> {
        tighter(self.max_tokens, self.max_completion_tokens)
    }
}

fn include_usage(options: Option<&StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage) == Some(true)
}

fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `prompt` of a `/v1/completions` request: a string, strings, token ids or batches of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    Text(String),
    /// Several prompts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u64>),
    /// Several prompts as token ids.
    TokenBatches(Vec<Vec<u64>>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl Prompt {
    /// The prompt as text: strings joined with `\n`, token ids as decimal words.
    pub fn text(&self) -> String {
        fn ids(tokens: &[u64]) -> String {
            tokens
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
        match self {
            Prompt::Text(text) => text.clone(),
            Prompt::Texts(texts) => texts.join("\n"),
            Prompt::Tokens(tokens) => ids(tokens),
            Prompt::TokenBatches(batches) => batches
                .iter()
                .map(|b| ids(b))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One message of a chat request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`…
    #[serde(default)]
    pub role: String,
    /// The content (absent or `null` for an assistant message with only tool calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// Other fields (`name`, `tool_calls`, `tool_call_id`…), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with a text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(content.into())),
            extra: Map::new(),
        }
    }
}

/// The content of a message: a string or an array of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts (`{"type": "text", "text": …}`, images…).
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content: the string, or the `text` of the parts joined with `\n`.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One part of an array content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`…
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Other fields, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// A usage with `total_tokens` = the (saturating) sum.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A non-stream chat answer (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// [`CHAT_COMPLETION_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answers.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields (`system_fingerprint`…).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Index of the choice.
    pub index: u32,
    /// The generated message.
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`…
    pub finish_reason: Option<String>,
    /// Other fields (`logprobs`…).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A chat stream chunk (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The id shared by every chunk of one answer.
    pub id: String,
    /// [`CHAT_COMPLETION_CHUNK_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The deltas (empty in a usage-only chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token counts (the final chunk when `stream_options.include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Index of the choice.
    pub index: u32,
    /// What this chunk adds.
    pub delta: Delta,
    /// Set on the last chunk of the choice; `null` before.
    pub finish_reason: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `delta` of a stream chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Generated text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Other fields (`tool_calls`, `reasoning_content`…).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `/v1/completions` answer, and each chunk of its stream (`object: "text_completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// `cmpl-…`.
    pub id: String,
    /// [`TEXT_COMPLETION_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answers (empty in a usage-only chunk).
    pub choices: Vec<TextChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a [`TextCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// Index of the choice.
    pub index: u32,
    /// Generated text (a piece of it in a stream chunk).
    pub text: String,
    /// `stop`, `length`; `null` before the last chunk of a stream.
    pub finish_reason: Option<String>,
    /// Other fields (`logprobs`…).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chat_request_keeps_unknown_fields_and_omits_absent_ones() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello there"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": null, "tool_calls": []}
            ],
            "temperature": 0.2,
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": false},
            "max_tokens": 7,
            "max_completion_tokens": 9
        });
        let request: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert!(request.is_stream());
        assert!(request.includes_usage());
        assert_eq!(request.token_limit(), Some(7));
        assert_eq!(request.prompt_text(), "be brief\nhello there");
        assert_eq!(request.extra.get("temperature"), Some(&json!(0.2)));
        let again = serde_json::to_value(&request).unwrap();
        // `content: null` is dropped; everything else is forwarded as sent.
        let mut expected = body;
        expected["messages"][2]
            .as_object_mut()
            .unwrap()
            .remove("content");
        assert_eq!(again, expected);

        let minimal: ChatCompletionRequest =
            serde_json::from_value(json!({"model": "m", "messages": []})).unwrap();
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"model": "m", "messages": []})
        );
        assert!(!minimal.is_stream());
        assert_eq!(minimal.token_limit(), None);
    }

    #[test]
    fn a_completion_request_accepts_every_prompt_shape() {
        for (prompt, text) in [
            (json!("hi you"), "hi you"),
            (json!(["a", "b"]), "a\nb"),
            (json!([1, 2]), "1 2"),
            (json!([[1], [2, 3]]), "1\n2 3"),
        ] {
            let request: CompletionRequest =
                serde_json::from_value(json!({"model": "m", "prompt": prompt, "max_tokens": 3}))
                    .unwrap();
            assert_eq!(request.prompt.text(), text);
            assert_eq!(request.token_limit(), Some(3));
        }
    }
}
