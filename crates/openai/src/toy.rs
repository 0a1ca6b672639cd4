//! `x402pp-toy-1`, the deterministic model of the reference provider
//! (docs/design/metered-streaming.md §5.1).
//!
//! One word is one token. The words come from a 16-word vocabulary indexed by a SHA-256 chain over
//! the prompt (`state = sha256(state ‖ prompt)`, word = `VOCABULARY[state[0] % 16]`, the same
//! generator as the provider's `/v1/inference`), so the same prompt always gives the same answer.
//! The prompt of a chat request is the text of its messages joined with `\n`; its prompt tokens
//! are the whitespace-separated words of that text. The answer has `min(limit, 256)` words, the
//! limit being the tighter of `max_tokens` and `max_completion_tokens` (16 if neither, at least
//! 1); `finish_reason` is `length` when the client's limit stopped it, else `stop`.
//!
//! [`stream`] yields the SSE frames one at a time, computing each word when it is asked for, so
//! the provider can wait between them: a first chunk with `delta: {role: "assistant"}`, one chunk
//! per word (`delta.content`, a space before every word but the first), a chunk with an empty
//! delta and the `finish_reason`, a usage chunk (`choices: []`) only if
//! `stream_options.include_usage`, then `data: [DONE]`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Map;
use sha2::{Digest, Sha256};

use crate::sse::{data_frame, done_frame};
use crate::types::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    ChunkChoice, CompletionRequest, Delta, TextChoice, TextCompletion, Usage,
    CHAT_COMPLETION_CHUNK_OBJECT, CHAT_COMPLETION_OBJECT, TEXT_COMPLETION_OBJECT,
};

/// The model's name.
pub const TOY_MODEL: &str = "x402pp-toy-1";
/// The most words one answer has.
pub const MAX_TOY_TOKENS: u64 = 256;
/// The words of an answer whose request sets no limit.
pub const DEFAULT_TOY_TOKENS: u64 = 16;

const VOCABULARY: [&str; 16] = [
    "the",
    "agent",
    "pays",
    "per",
    "request",
    "with",
    "signed",
    "vouchers",
    "and",
    "gets",
    "receipts",
    "on",
    "solana",
    "fast",
    "cheap",
    "verifiable",
];

/// What varies between two answers to the same prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToyOptions {
    /// Mixed into the id (`sha256(seq big-endian ‖ prompt)`), e.g. the voucher's sequence
    /// number, so two answers to one prompt get two ids; `None`: `sha256(prompt)`.
    pub seq: Option<u64>,
    /// `created`, in unix seconds.
    pub created: u64,
}

/// The endless word sequence of a prompt.
#[derive(Debug, Clone)]
pub struct ToyWords {
    prompt: String,
    state: [u8; 32],
}

impl ToyWords {
    /// The words of `prompt`.
    pub fn new(prompt: &str) -> Self {
        ToyWords {
            prompt: prompt.to_owned(),
            state: [0; 32],
        }
    }
}

impl Iterator for ToyWords {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        let mut hasher = Sha256::new();
        hasher.update(self.state);
        hasher.update(self.prompt.as_bytes());
        self.state = hasher.finalize().into();
        let index = usize::from(self.state[0] & 0x0f);
        VOCABULARY.get(index).copied()
    }
}

/// The prompt tokens of a text: its whitespace-separated words.
pub fn prompt_tokens(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

/// Everything an answer needs, from either kind of request.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    created: u64,
    prompt: String,
    prompt_tokens: u64,
    tokens: u64,
    finish_reason: &'static str,
    include_usage: bool,
    chat: bool,
}

impl Plan {
    fn new(
        prompt: String,
        limit: Option<u64>,
        include_usage: bool,
        chat: bool,
        options: ToyOptions,
    ) -> Self {
        let tokens = limit.unwrap_or(DEFAULT_TOY_TOKENS).clamp(1, MAX_TOY_TOKENS);
        let finish_reason = if limit.is_some_and(|l| l <= MAX_TOY_TOKENS) {
            "length"
        } else {
            "stop"
        };
        let mut hasher = Sha256::new();
        if let Some(seq) = options.seq {
            hasher.update(seq.to_be_bytes());
        }
        hasher.update(prompt.as_bytes());
        let digest = hex::encode(hasher.finalize());
        let prefix = if chat { "chatcmpl-" } else { "cmpl-" };
        Plan {
            id: format!("{prefix}{}", digest.get(..12).unwrap_or_default()),
            created: options.created,
            prompt_tokens: prompt_tokens(&prompt),
            prompt,
            tokens,
            finish_reason,
            include_usage,
            chat,
        }
    }

    fn chat(request: &ChatCompletionRequest, options: ToyOptions) -> Self {
        Plan::new(
            request.prompt_text(),
            request.token_limit(),
            request.includes_usage(),
            true,
            options,
        )
    }

    fn text(request: &CompletionRequest, options: ToyOptions) -> Self {
        Plan::new(
            request.prompt.text(),
            request.token_limit(),
            request.includes_usage(),
            false,
            options,
        )
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.tokens)
    }

    fn answer_text(&self) -> String {
        let words: Vec<&str> = ToyWords::new(&self.prompt)
            .take(usize::try_from(self.tokens).unwrap_or(usize::MAX))
            .collect();
        words.join(" ")
    }
}

/// The non-stream answer to a chat request, with ids from the prompt alone and `created` 0.
pub fn complete(request: &ChatCompletionRequest) -> ChatCompletion {
    complete_with(request, ToyOptions::default())
}

/// The non-stream answer to a chat request.
pub fn complete_with(request: &ChatCompletionRequest, options: ToyOptions) -> ChatCompletion {
    let plan = Plan::chat(request, options);
    ChatCompletion {
        id: plan.id.clone(),
        object: CHAT_COMPLETION_OBJECT.to_owned(),
        created: plan.created,
        model: TOY_MODEL.to_owned(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage::new("assistant", plan.answer_text()),
            finish_reason: Some(plan.finish_reason.to_owned()),
            extra: Map::new(),
        }],
        usage: Some(plan.usage()),
        extra: Map::new(),
    }
}

/// The non-stream answer to a `/v1/completions` request, with `created` 0.
pub fn complete_text(request: &CompletionRequest) -> TextCompletion {
    complete_text_with(request, ToyOptions::default())
}

/// The non-stream answer to a `/v1/completions` request.
pub fn complete_text_with(request: &CompletionRequest, options: ToyOptions) -> TextCompletion {
    let plan = Plan::text(request, options);
    TextCompletion {
        id: plan.id.clone(),
        object: TEXT_COMPLETION_OBJECT.to_owned(),
        created: plan.created,
        model: TOY_MODEL.to_owned(),
        choices: vec![TextChoice {
            index: 0,
            text: plan.answer_text(),
            finish_reason: Some(plan.finish_reason.to_owned()),
            extra: Map::new(),
        }],
        usage: Some(plan.usage()),
        extra: Map::new(),
    }
}

/// The streamed answer to a chat request (see the module doc), with `created` 0.
pub fn stream(request: &ChatCompletionRequest) -> ToyStream {
    stream_with(request, ToyOptions::default())
}

/// The streamed answer to a chat request.
pub fn stream_with(request: &ChatCompletionRequest, options: ToyOptions) -> ToyStream {
    ToyStream::new(Plan::chat(request, options))
}

/// The streamed answer to a `/v1/completions` request (no role chunk; `text` pieces), with
/// `created` 0.
pub fn stream_text(request: &CompletionRequest) -> ToyStream {
    stream_text_with(request, ToyOptions::default())
}

/// The streamed answer to a `/v1/completions` request.
pub fn stream_text_with(request: &CompletionRequest, options: ToyOptions) -> ToyStream {
    ToyStream::new(Plan::text(request, options))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Word,
    Finish,
    Usage,
    Done,
    End,
}

/// The SSE frames of a streamed toy answer, each computed when asked for.
#[derive(Debug, Clone)]
pub struct ToyStream {
    plan: Plan,
    words: ToyWords,
    emitted: u64,
    step: Step,
}

impl ToyStream {
    fn new(plan: Plan) -> Self {
        ToyStream {
            words: ToyWords::new(&plan.prompt),
            emitted: 0,
            step: if plan.chat { Step::Role } else { Step::Word },
            plan,
        }
    }

    /// The id of every chunk.
    pub fn id(&self) -> &str {
        &self.plan.id
    }

    /// The usage of the whole answer (what the last chunk reports).
    pub fn usage(&self) -> Usage {
        self.plan.usage()
    }

    /// The words (tokens) yielded so far.
    pub fn tokens_emitted(&self) -> u64 {
        self.emitted
    }

    /// Whether the next frame is a word (the provider waits before those).
    pub fn next_is_token(&self) -> bool {
        self.step == Step::Word
    }

    fn frame<T: Serialize>(chunk: &T) -> Bytes {
        // Serializing these structs cannot fail (string keys, no non-finite floats).
        data_frame(&serde_json::to_string(chunk).unwrap_or_default())
    }

    fn chat_chunk(&self, delta: Delta, finish_reason: Option<&str>) -> Bytes {
        Self::frame(&ChatCompletionChunk {
            id: self.plan.id.clone(),
            object: CHAT_COMPLETION_CHUNK_OBJECT.to_owned(),
            created: self.plan.created,
            model: TOY_MODEL.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        })
    }

    fn text_chunk(&self, text: String, finish_reason: Option<&str>) -> Bytes {
        Self::frame(&TextCompletion {
            id: self.plan.id.clone(),
            object: TEXT_COMPLETION_OBJECT.to_owned(),
            created: self.plan.created,
            model: TOY_MODEL.to_owned(),
            choices: vec![TextChoice {
                index: 0,
                text,
                finish_reason: finish_reason.map(str::to_owned),
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        })
    }

    fn usage_chunk(&self) -> Bytes {
        let usage = Some(self.plan.usage());
        if self.plan.chat {
            Self::frame(&ChatCompletionChunk {
                id: self.plan.id.clone(),
                object: CHAT_COMPLETION_CHUNK_OBJECT.to_owned(),
                created: self.plan.created,
                model: TOY_MODEL.to_owned(),
                choices: Vec::new(),
                usage,
                extra: Map::new(),
            })
        } else {
            Self::frame(&TextCompletion {
                id: self.plan.id.clone(),
                object: TEXT_COMPLETION_OBJECT.to_owned(),
                created: self.plan.created,
                model: TOY_MODEL.to_owned(),
                choices: Vec::new(),
                usage,
                extra: Map::new(),
            })
        }
    }

    fn frames_left(&self) -> u64 {
        // After the words: the finish chunk, the usage chunk if asked, `[DONE]`.
        let tail = u64::from(self.plan.include_usage).saturating_add(2);
        let words_left = self.plan.tokens.saturating_sub(self.emitted);
        match self.step {
            Step::Role => words_left.saturating_add(tail).saturating_add(1),
            Step::Word => words_left.saturating_add(tail),
            Step::Finish => tail,
            Step::Usage => 2,
            Step::Done => 1,
            Step::End => 0,
        }
    }
}

impl Iterator for ToyStream {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self.step {
            Step::Role => {
                self.step = Step::Word;
                let delta = Delta {
                    role: Some("assistant".to_owned()),
                    ..Delta::default()
                };
                Some(self.chat_chunk(delta, None))
            }
            Step::Word => {
                let word = self.words.next().unwrap_or("the");
                let piece = if self.emitted == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                };
                self.emitted = self.emitted.saturating_add(1);
                if self.emitted >= self.plan.tokens {
                    self.step = Step::Finish;
                }
                Some(if self.plan.chat {
                    let delta = Delta {
                        content: Some(piece),
                        ..Delta::default()
                    };
                    self.chat_chunk(delta, None)
                } else {
                    self.text_chunk(piece, None)
                })
            }
            Step::Finish => {
                self.step = if self.plan.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                let finish = Some(self.plan.finish_reason);
                Some(if self.plan.chat {
                    self.chat_chunk(Delta::default(), finish)
                } else {
                    self.text_chunk(String::new(), finish)
                })
            }
            Step::Usage => {
                self.step = Step::Done;
                Some(self.usage_chunk())
            }
            Step::Done => {
                self.step = Step::End;
                Some(done_frame())
            }
            Step::End => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.frames_left()).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ToyStream {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    use super::*;
    use crate::sse::SseParser;
    use crate::usage::{is_usage_only_chunk, StreamUsage, UsageCount};
    use serde_json::{json, Value};

    fn chat(body: Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_toy_chat_completion_is_deterministic_and_reports_its_usage() {
        let request = chat(json!({"model": TOY_MODEL, "max_tokens": 8, "messages": [
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": "Explain x402 in one line"}
        ]}));
        let answer = complete(&request);
        assert_eq!(answer, complete(&request));
        assert_eq!(answer.object, "chat.completion");
        assert_eq!(answer.model, TOY_MODEL);
        assert!(answer.id.starts_with("chatcmpl-"));
        assert_eq!(answer.id.len(), "chatcmpl-".len() + 12);
        assert!(answer.id[9..].bytes().all(|b| b.is_ascii_hexdigit()));
        let choice = &answer.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("length"));
        assert_eq!(choice.message.role, "assistant");
        let text = choice.message.content.as_ref().unwrap().text();
        assert_eq!(text.split(' ').count(), 8);
        assert!(text.split(' ').all(|w| VOCABULARY.contains(&w)));
        assert_eq!(answer.usage, Some(Usage::new(7, 8)));
        assert_eq!(answer.usage.unwrap().total_tokens, 15);

        // Same words as the provider's `/v1/inference` generator for the same prompt.
        let mut state = [0u8; 32];
        let mut expected = Vec::new();
        for _ in 0..8 {
            let mut hasher = Sha256::new();
            hasher.update(state);
            hasher.update(request.prompt_text().as_bytes());
            state = hasher.finalize().into();
            expected.push(VOCABULARY[usize::from(state[0] % 16)]);
        }
        assert_eq!(text, expected.join(" "));

        // Another prompt, another answer; a seq changes the id only.
        let other = chat(json!({"model": "m", "max_tokens": 8,
                                "messages": [{"role": "user", "content": "something else"}]}));
        assert_ne!(complete(&other).choices[0].message, choice.message);
        let seq = complete_with(
            &request,
            ToyOptions {
                seq: Some(3),
                created: 1_700_000_000,
            },
        );
        assert_ne!(seq.id, answer.id);
        assert_eq!(seq.created, 1_700_000_000);
        assert_eq!(seq.choices, answer.choices);
    }

    #[test]
    fn the_toy_token_count_is_bounded_and_stop_when_the_client_set_no_limit() {
        let no_limit = complete(&chat(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ));
        assert_eq!(no_limit.usage, Some(Usage::new(1, DEFAULT_TOY_TOKENS)));
        assert_eq!(no_limit.choices[0].finish_reason.as_deref(), Some("stop"));
        let huge = complete(&chat(
            json!({"max_completion_tokens": 10_000, "messages": [{"role": "user", "content": "hi"}]}),
        ));
        assert_eq!(huge.usage.unwrap().completion_tokens, MAX_TOY_TOKENS);
        assert_eq!(huge.choices[0].finish_reason.as_deref(), Some("stop"));
        let tighter = complete(&chat(json!({"max_tokens": 300, "max_completion_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]})));
        assert_eq!(tighter.usage.unwrap().completion_tokens, 5);
        let zero = complete(&chat(json!({"max_tokens": 0, "messages": []})));
        assert_eq!(zero.usage, Some(Usage::new(0, 1)));
    }

    fn events(frames: &[Bytes]) -> Vec<Value> {
        let mut parser = SseParser::new();
        frames
            .iter()
            .flat_map(|f| parser.feed(f))
            .map(|e| {
                let e = e.unwrap();
                if e.is_done() {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(&e.data).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn the_stream_ends_with_a_usage_chunk_only_when_asked_and_then_done() {
        let body = json!({"model": "m", "max_tokens": 4, "stream": true,
                          "messages": [{"role": "user", "content": "stream me please"}]});
        let plain = stream(&chat(body.clone()));
        assert_eq!(plain.len(), 1 + 4 + 1 + 1);
        let plain: Vec<Bytes> = plain.collect();
        let parsed = events(&plain);
        assert_eq!(parsed.len(), 7);
        assert_eq!(
            parsed[0]["choices"][0]["delta"],
            json!({"role": "assistant"})
        );
        assert_eq!(parsed[0]["object"], json!("chat.completion.chunk"));
        let words: String = parsed[1..5]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let answer = complete(&chat(body.clone()));
        assert_eq!(
            words,
            answer.choices[0].message.content.as_ref().unwrap().text()
        );
        assert!(!words.starts_with(' '));
        assert_eq!(parsed[5]["choices"][0]["finish_reason"], json!("length"));
        assert_eq!(parsed[5]["choices"][0]["delta"], json!({}));
        assert_eq!(parsed[6], json!("[DONE]"));
        assert!(parsed.iter().all(|c| c.get("usage").is_none()));
        assert!(parsed[..6].iter().all(|c| c["id"] == json!(answer.id)));

        let mut asked = body;
        asked["stream_options"] = json!({"include_usage": true});
        let asked = stream(&chat(asked));
        assert_eq!(asked.len(), 8);
        let frames: Vec<Bytes> = asked.collect();
        let parsed = events(&frames);
        assert_eq!(parsed[6]["choices"], json!([]));
        assert_eq!(
            parsed[6]["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        assert_eq!(parsed[7], json!("[DONE]"));
        let mut parser = SseParser::new();
        let usage_event = parser.feed(&frames[6]).remove(0).unwrap();
        assert!(is_usage_only_chunk(&usage_event));

        // The counter reads the exact usage from the toy's stream, and estimates the same
        // completion tokens without it.
        let mut counter = StreamUsage::new();
        frames.iter().for_each(|f| {
            counter.feed_bytes(f);
        });
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 3,
                completion_tokens: 4,
                estimated: false
            }
        );
        let mut counter = StreamUsage::new();
        plain.iter().for_each(|f| {
            counter.feed_bytes(f);
        });
        assert_eq!(
            counter.usage(),
            UsageCount {
                prompt_tokens: 0,
                completion_tokens: 4,
                estimated: true
            }
        );
    }

    #[test]
    fn the_stream_is_produced_lazily_one_frame_at_a_time() {
        let mut frames = stream(&chat(json!({"max_tokens": 256, "stream": true,
            "messages": [{"role": "user", "content": "long"}]})));
        assert!(!frames.next_is_token());
        frames.next();
        assert!(frames.next_is_token());
        frames.next();
        frames.next();
        assert_eq!(frames.tokens_emitted(), 2);
        assert_eq!(frames.len(), 254 + 2);
        assert_eq!(frames.usage(), Usage::new(1, 256));
    }

    #[test]
    fn text_completions_answer_and_stream_the_same_words() {
        let request: CompletionRequest = serde_json::from_value(json!({
            "model": "m", "prompt": "once upon a time", "max_tokens": 3, "stream": true,
            "stream_options": {"include_usage": true}}))
        .unwrap();
        let answer = complete_text(&request);
        assert_eq!(answer.object, "text_completion");
        assert!(answer.id.starts_with("cmpl-"));
        assert_eq!(answer.usage, Some(Usage::new(4, 3)));
        let frames: Vec<Bytes> = stream_text(&request).collect();
        let parsed = events(&frames);
        assert_eq!(parsed.len(), 3 + 1 + 1 + 1);
        let text: String = parsed[..3]
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, answer.choices[0].text);
        assert_eq!(parsed[3]["choices"][0]["finish_reason"], json!("length"));
        assert_eq!(parsed[4]["usage"]["completion_tokens"], json!(3));
        assert_eq!(parsed[5], json!("[DONE]"));
    }
}
