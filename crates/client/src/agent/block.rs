//! The receipt block a provider appends to a streamed (SSE) answer, and the splitter that keeps
//! it from the caller (design `docs/design/metered-streaming.md` §3.6):
//!
//! ```text
//! <handler bytes>\n\nevent: x402-receipt\ndata: <base64 receipt>\n\nevent: x402-session-status\ndata: <base64 snapshot>\n\n
//! ```
//!
//! The leading `\n\n` ends any unterminated event of the handler; neither it nor the rest of the
//! block is covered by the receipt's output hash. The splitter passes every byte on as soon as it
//! cannot be part of the block (so each handler event reaches the caller with its terminating
//! blank line), and holds back only what could still be the block: from an `event: x402-receipt`
//! that follows a blank line, for as long as what follows it is a well-formed block (the receipt
//! event, then at most the status event, then the end). A handler emitting its own
//! `x402-receipt` event earlier cannot stand for the final one: bytes after it break the form
//! and the held bytes are passed on as the handler's. The block's leading `\n\n` is passed on
//! (an empty dispatch for an SSE reader) and subtracted again when the block is found: the
//! splitter keeps the hash of the bytes passed but the last two.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use x402pp_protocol::{headers, Hash32};

/// The receipt event's head, after the blank line that starts the block.
const RECEIPT_EVENT: &[u8] = b"event: x402-receipt\ndata: ";
/// The status event's head.
const STATUS_EVENT: &[u8] = b"event: x402-session-status\ndata: ";
/// The blank line in front of the block.
const BLANK: &[u8] = b"\n\n";
/// The longest `data:` value of either event (a header value's limit).
const MAX_DATA: usize = headers::MAX_HEADER_LEN;

/// Why a stream has no usable receipt block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamReceiptError {
    /// The stream ended without a receipt block (or with a truncated one).
    #[error("the stream ended without its x402-receipt event")]
    Missing,
    /// A receipt block was followed by more than its session status event: it is not the final
    /// block, and no well-formed one ends the stream.
    #[error("the stream's x402-receipt event is followed by other data than the session status")]
    NotFinal,
}

/// How far bytes starting at `event: x402-receipt` follow the block's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A proper beginning of a block (more must follow).
    Prefix,
    /// A whole block: the receipt event, and the status event if present.
    Complete,
    /// Not a block.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
enum State {
    ReceiptHead(usize),
    ReceiptData(usize),
    ReceiptEnd,
    AfterReceipt,
    StatusHead(usize),
    StatusData(usize),
    StatusEnd,
    Done,
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=')
}

/// The form of `bytes` (which start where `event: x402-receipt` would).
fn form(bytes: &[u8]) -> Form {
    scan(bytes).0
}

/// The form of `bytes`, and whether a beginning of them was a whole block (a block followed by
/// something else).
fn scan(bytes: &[u8]) -> (Form, bool) {
    let mut state = State::ReceiptHead(0);
    let mut was_complete = false;
    for &byte in bytes {
        was_complete |= matches!(state, State::AfterReceipt | State::Done);
        state = match state {
            State::ReceiptHead(at) => match RECEIPT_EVENT.get(at) {
                Some(&expected) if expected == byte => {
                    if at.saturating_add(1) == RECEIPT_EVENT.len() {
                        State::ReceiptData(0)
                    } else {
                        State::ReceiptHead(at.saturating_add(1))
                    }
                }
                _ => return (Form::Invalid, was_complete),
            },
            State::ReceiptData(len) if is_base64(byte) && len < MAX_DATA => {
                State::ReceiptData(len.saturating_add(1))
            }
            State::ReceiptData(len) if byte == b'\n' && len > 0 => State::ReceiptEnd,
            State::ReceiptEnd if byte == b'\n' => State::AfterReceipt,
            State::AfterReceipt if STATUS_EVENT.first() == Some(&byte) => State::StatusHead(1),
            State::StatusHead(at) => match STATUS_EVENT.get(at) {
                Some(&expected) if expected == byte => {
                    if at.saturating_add(1) == STATUS_EVENT.len() {
                        State::StatusData(0)
                    } else {
                        State::StatusHead(at.saturating_add(1))
                    }
                }
                _ => return (Form::Invalid, was_complete),
            },
            State::StatusData(len) if is_base64(byte) && len < MAX_DATA => {
                State::StatusData(len.saturating_add(1))
            }
            State::StatusData(len) if byte == b'\n' && len > 0 => State::StatusEnd,
            State::StatusEnd if byte == b'\n' => State::Done,
            _ => return (Form::Invalid, was_complete),
        };
    }
    match state {
        State::AfterReceipt | State::Done => (Form::Complete, true),
        _ => (Form::Prefix, was_complete),
    }
}

/// The `data:` value of the event whose head is `head` at the start of `bytes`.
fn data_of<'a>(bytes: &'a [u8], head: &[u8]) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(head)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    rest.get(..end)
}

/// The final block of a stream, and what came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalBlock {
    /// The `x402-receipt` event's data: the `X-402-Receipt` header value.
    pub receipt: String,
    /// The `x402-session-status` event's data, when it was sent.
    pub status: Option<String>,
    /// The handler's bytes: everything before the block's blank line.
    pub output_bytes: u64,
    /// sha256 of those bytes.
    pub output_hash: Hash32,
}

/// Splits a streamed answer into the handler's bytes (passed on) and the receipt block (kept).
#[derive(Clone, Default)]
pub struct BlockSplitter {
    /// Bytes not passed on yet: empty, or a possible block from its `event: x402-receipt`.
    held: Vec<u8>,
    /// The last (at most two) bytes passed on.
    tail: Vec<u8>,
    /// Bytes passed on.
    passed: u64,
    /// sha256 of the bytes passed on.
    hasher: Sha256,
    /// sha256 of the bytes passed on but the last two (`tail`).
    lagging: Sha256,
    /// A complete block was followed by more bytes.
    saw_stale_block: bool,
}

impl std::fmt::Debug for BlockSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSplitter")
            .field("held", &self.held.len())
            .field("passed", &self.passed)
            .finish_non_exhaustive()
    }
}

impl BlockSplitter {
    /// A splitter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a blank line ends right before `held[at]` (counting the bytes passed on).
    fn after_blank(&self, at: usize) -> bool {
        let before = |back: usize| -> Option<u8> {
            match at.checked_sub(back) {
                Some(index) => self.held.get(index).copied(),
                None => {
                    let from_tail = back.checked_sub(at)?;
                    let index = self.tail.len().checked_sub(from_tail)?;
                    self.tail.get(index).copied()
                }
            }
        };
        before(1) == Some(b'\n') && before(2) == Some(b'\n')
    }

    /// Takes the next bytes of the answer; returns those that can be passed on.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if chunk.is_empty() {
            return Bytes::new();
        }
        self.held.extend_from_slice(chunk);
        let mut start = self.held.len();
        for at in 0..self.held.len() {
            if !self.after_blank(at) {
                continue;
            }
            let (form, was_complete) = scan(self.held.get(at..).unwrap_or_default());
            if form != Form::Invalid {
                start = at;
                break;
            }
            self.saw_stale_block |= was_complete;
        }
        let out: Vec<u8> = self.held.drain(..start).collect();
        self.pass(&out);
        Bytes::from(out)
    }

    fn pass(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        self.hasher.update(out);
        self.passed = self
            .passed
            .saturating_add(u64::try_from(out.len()).unwrap_or(u64::MAX));
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(out);
        let keep = window.len().saturating_sub(BLANK.len());
        let (leaving, staying) = window.split_at(keep);
        self.lagging.update(leaving);
        self.tail = staying.to_vec();
    }

    /// The bytes passed on so far and their hash: what the agent read of a cut stream.
    pub fn passed(&self) -> (u64, Hash32) {
        (self.passed, Hash32(self.hasher.clone().finalize().into()))
    }

    /// Whether the bytes held so far are a whole block (the stream may end here).
    pub fn has_block(&self) -> bool {
        !self.held.is_empty() && form(&self.held) == Form::Complete
    }

    /// At the end of the stream: the final block, or why there is none. The bytes still held
    /// (a truncated block) are not passed on.
    pub fn finish(&self) -> Result<FinalBlock, StreamReceiptError> {
        if !self.has_block() || !self.after_blank(0) {
            return Err(if self.saw_stale_block {
                StreamReceiptError::NotFinal
            } else {
                StreamReceiptError::Missing
            });
        }
        let receipt = data_of(&self.held, RECEIPT_EVENT).ok_or(StreamReceiptError::Missing)?;
        let after_receipt = self
            .held
            .get(
                RECEIPT_EVENT
                    .len()
                    .saturating_add(receipt.len())
                    .saturating_add(2)..,
            )
            .unwrap_or_default();
        let status = data_of(after_receipt, STATUS_EVENT);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Ok(FinalBlock {
            receipt: text(receipt),
            status: status.map(text),
            // The block's blank line was passed on; it is not the handler's.
            output_bytes: self.passed.saturating_sub(2),
            output_hash: Hash32(self.lagging.clone().finalize().into()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing
    )]

    use super::*;
    use x402pp_protocol::crypto::output_hash;

    const HANDLER: &[u8] = b"data: {\"t\":\"he\"}\n\ndata: {\"t\":\"llo\"}\n\ndata: [DONE]\n\n";

    fn block(receipt: &str, status: &str) -> Vec<u8> {
        format!("\n\nevent: x402-receipt\ndata: {receipt}\n\nevent: x402-session-status\ndata: {status}\n\n")
            .into_bytes()
    }

    /// Feeds `chunks`; returns what was passed on and the end.
    fn run<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<u8>, Result<FinalBlock, StreamReceiptError>) {
        let mut splitter = BlockSplitter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&splitter.push(chunk));
        }
        (out, splitter.finish())
    }

    fn expect_final(handler: &[u8], end: &Result<FinalBlock, StreamReceiptError>) {
        let end = end.as_ref().unwrap();
        assert_eq!(end.receipt, "UkVDRUlQVA==");
        assert_eq!(end.status.as_deref(), Some("U1RBVFVT"));
        assert_eq!(end.output_bytes, handler.len() as u64);
        assert_eq!(end.output_hash, output_hash(handler));
    }

    #[test]
    fn the_block_is_found_and_kept_from_the_caller_wherever_the_stream_is_split() {
        let mut stream = HANDLER.to_vec();
        stream.extend(block("UkVDRUlQVA==", "U1RBVFVT"));
        let mut passed_on = HANDLER.to_vec();
        passed_on.extend_from_slice(b"\n\n");
        for at in 0..=stream.len() {
            let (out, end) = run([&stream[..at], &stream[at..]]);
            assert_eq!(out, passed_on, "split at {at}");
            expect_final(HANDLER, &end);
        }
        let (out, end) = run(stream.iter().map(std::slice::from_ref));
        assert_eq!(out, passed_on, "byte by byte");
        expect_final(HANDLER, &end);
    }

    #[test]
    fn each_handler_event_is_passed_on_whole_as_soon_as_it_arrives() {
        let mut splitter = BlockSplitter::new();
        assert_eq!(&splitter.push(b"data: a\n\n")[..], b"data: a\n\n");
        // A beginning that could be the block's is held until it cannot.
        assert_eq!(&splitter.push(b"event: x402-rec")[..], b"");
        assert_eq!(
            &splitter.push(b"kless\ndata: b\n\n")[..],
            b"event: x402-reckless\ndata: b\n\n"
        );
        assert_eq!(splitter.passed().0, 39);
    }

    #[test]
    fn a_handler_emitting_its_own_receipt_event_earlier_cannot_forge_the_final_one() {
        let mut handler = b"data: a\n\n".to_vec();
        handler.extend(block("RkFLRQ==", "RkFLRQ=="));
        handler.extend_from_slice(b"data: b\n\n");
        // Its own receipt event, last before the real block, without a status event.
        handler.extend_from_slice(b"event: x402-receipt\ndata: RkFLRTI=\n\n");
        let mut stream = handler.clone();
        stream.extend(block("UkVDRUlQVA==", "U1RBVFVT"));
        for at in 0..=stream.len() {
            let (out, end) = run([&stream[..at], &stream[at..]]);
            assert_eq!(&out[..handler.len()], &handler[..], "split at {at}");
            expect_final(&handler, &end);
        }
    }

    #[test]
    fn a_block_not_followed_only_by_the_status_event_is_refused() {
        let mut stream = HANDLER.to_vec();
        stream.extend(block("UkVDRUlQVA==", "U1RBVFVT"));
        stream.extend_from_slice(b"data: more\n\n");
        let (out, end) = run([&stream[..]]);
        assert_eq!(end, Err(StreamReceiptError::NotFinal));
        assert_eq!(out, stream, "the bytes are the handler's after all");

        let mut other_event = HANDLER.to_vec();
        other_event.extend_from_slice(
            b"\n\nevent: x402-receipt\ndata: UkVDRUlQVA==\n\nevent: other\ndata: x\n\n",
        );
        let (_, end) = run([&other_event[..]]);
        assert_eq!(end, Err(StreamReceiptError::NotFinal));
    }

    #[test]
    fn a_stream_ending_without_the_block_has_no_receipt() {
        assert_eq!(run([HANDLER]).1, Err(StreamReceiptError::Missing));
        assert_eq!(run([&b""[..]]).1, Err(StreamReceiptError::Missing));
        // Cut inside the block: the truncated block is not passed on.
        let mut stream = HANDLER.to_vec();
        stream.extend(block("UkVDRUlQVA==", "U1RBVFVT"));
        let cut = HANDLER.len() + 30;
        let (out, end) = run([&stream[..cut]]);
        assert_eq!(end, Err(StreamReceiptError::Missing));
        assert_eq!(out.len(), HANDLER.len() + 2);
        // A block without its blank line in front is not the block.
        let (_, end) = run([&b"event: x402-receipt\ndata: UkVDRUlQVA==\n\n"[..]]);
        assert_eq!(end, Err(StreamReceiptError::Missing));
    }

    #[test]
    fn the_status_event_may_be_left_out_and_an_empty_answer_has_a_block_too() {
        let (out, end) = run([&b"\n\nevent: x402-receipt\ndata: UkVDRUlQVA==\n\n"[..]]);
        assert_eq!(out, b"\n\n");
        let end = end.unwrap();
        assert_eq!((end.output_bytes, end.status), (0, None));
        assert_eq!(end.output_hash, output_hash(b""));
    }

    #[test]
    fn an_oversized_or_non_base64_data_value_is_not_a_block() {
        let mut stream = HANDLER.to_vec();
        stream.extend(block(&"A".repeat(MAX_DATA + 1), "U1RBVFVT"));
        assert_eq!(run([&stream[..]]).1, Err(StreamReceiptError::Missing));
        let mut stream = HANDLER.to_vec();
        stream.extend(block("not base64!", "U1RBVFVT"));
        assert_eq!(run([&stream[..]]).1, Err(StreamReceiptError::Missing));
    }
}
