//! Server-sent events: an incremental parser ([`SseParser`]) and a writer ([`data_frame`],
//! [`event_frame`], [`done_frame`]).
//!
//! The parser follows the WHATWG "event stream interpretation": lines end with CRLF, LF or CR; a
//! leading byte order mark is skipped; an empty line dispatches the event being built; a line
//! starting with `:` is a comment; `field: value` loses one space after the colon; `data` lines
//! are joined with `\n`; `event` names the event; `id` (without NUL) sets the last event id;
//! `retry` (ASCII digits) sets the reconnection time; other fields are ignored; an event without
//! data is not dispatched; an unterminated event at the end of the stream is discarded.
//!
//! Input may be split anywhere, including inside a CRLF pair or a UTF-8 sequence: bytes are kept
//! until their line is complete, then decoded (invalid UTF-8 becomes U+FFFD, as in a browser).
//! Memory is bounded: an event whose pending line plus data exceeds the limit (1 MiB by default)
//! is dropped with [`SseError::EventTooLarge`], and the parser resumes at the next event.

use bytes::Bytes;

/// The `data` of the event that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";
/// The name of the event carrying an x402++ receipt at the end of a metered stream.
pub const RECEIPT_EVENT: &str = "x402-receipt";
/// The name of the event carrying the session status after the receipt.
pub const SESSION_STATUS_EVENT: &str = "x402-session-status";
/// The default bound of one event (pending line plus data), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
/// `Content-Type` of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, if one was given (`None` is the default type, `message`).
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The last event id at dispatch (it persists across events), if not empty.
    pub id: Option<String>,
}

impl SseEvent {
    /// An unnamed event.
    pub fn message(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
            id: None,
        }
    }

    /// The event type: the `event` field, or `message`.
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// An event of the default type (no `event` field, or `event: message`).
    pub fn is_message(&self) -> bool {
        self.event_type() == "message"
    }

    /// `data: [DONE]` of an OpenAI stream.
    pub fn is_done(&self) -> bool {
        self.is_message() && self.data.trim() == DONE
    }

    /// The event as frame bytes (see [`event_frame`]; the id is written too).
    pub fn to_frame(&self) -> Bytes {
        let mut out = String::new();
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(&single_line(id));
            out.push('\n');
        }
        if let Some(event) = &self.event {
            out.push_str("event: ");
            out.push_str(&single_line(event));
            out.push('\n');
        }
        push_data(&mut out, &self.data);
        Bytes::from(out)
    }
}

/// What went wrong in a stream. The parser goes on after an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew beyond the bound; it was dropped and its remaining lines are skipped.
    #[error("server-sent event longer than {limit} bytes, dropped")]
    EventTooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
}

/// An incremental server-sent events parser.
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous byte was a CR: a LF right after it belongs to the same line end.
    after_cr: bool,
    /// Still at the start of the stream (a BOM may come, possibly split).
    at_start: bool,
    /// Dropping an oversized event: lines are skipped until the next empty line.
    skipping: bool,
    /// The bytes of the current line are being dropped (its end is not an empty line).
    line_dropped: bool,
    data: String,
    event: Option<String>,
    last_id: String,
    retry: Option<u64>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl SseParser {
    /// A parser bounding each event to [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser bounding each event (pending line plus data) to `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            skipping: false,
            line_dropped: false,
            data: String::new(),
            event: None,
            last_id: String::new(),
            retry: None,
        }
    }

    /// Feed the next bytes of the stream; returns the events they complete, in order, and an
    /// error for each event dropped as too large.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        let mut out = Vec::new();
        if self.at_start {
            // The BOM may itself be split: hold bytes while they are a prefix of it.
            let held = self.line.len();
            let want = BOM.len().saturating_sub(held);
            let take = want.min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            self.line.extend_from_slice(head);
            bytes = rest;
            if BOM.starts_with(&self.line) {
                if self.line.len() < BOM.len() {
                    return out;
                }
                self.line.clear();
            } else {
                // Not a BOM: replay the held bytes as ordinary input.
                let held = std::mem::take(&mut self.line);
                self.at_start = false;
                self.scan(&held, &mut out);
            }
            self.at_start = false;
        }
        self.scan(bytes, &mut out);
        out
    }

    /// The reconnection time of the last valid `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id (empty if none).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// Whether bytes of an unfinished event are held (a stream ending here loses them).
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || self.event.is_some()
    }

    fn scan(&mut self, mut bytes: &[u8], out: &mut Vec<Result<SseEvent, SseError>>) {
        if self.after_cr {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            if !bytes.is_empty() {
                self.after_cr = false;
            }
        }
        while let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (head, rest) = bytes.split_at(end);
            let (terminator, rest) = rest.split_at(1);
            self.append_line(head, out);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
            self.line = line;
            self.line.clear();
            bytes = rest;
            if terminator == b"\r" {
                match bytes.first() {
                    Some(b'\n') => bytes = bytes.get(1..).unwrap_or_default(),
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.append_line(bytes, out);
    }

    fn append_line(&mut self, bytes: &[u8], out: &mut Vec<Result<SseEvent, SseError>>) {
        if self.line_dropped || bytes.is_empty() {
            return;
        }
        if self.skipping {
            // A non-empty line of the dropped event: nothing to keep.
            self.line_dropped = true;
            return;
        }
        let size = self
            .line
            .len()
            .saturating_add(bytes.len())
            .saturating_add(self.data.len());
        if size > self.max_event_bytes {
            self.overflow(out);
            self.line_dropped = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn overflow(&mut self, out: &mut Vec<Result<SseEvent, SseError>>) {
        out.push(Err(SseError::EventTooLarge {
            limit: self.max_event_bytes,
        }));
        self.skipping = true;
        self.line = Vec::new();
        self.data = String::new();
        self.event = None;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Result<SseEvent, SseError>>) {
        if self.line_dropped {
            self.line_dropped = false;
            return;
        }
        if line.is_empty() {
            if self.skipping {
                self.skipping = false;
                return;
            }
            self.dispatch(out);
            return;
        }
        if self.skipping || line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let (field, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                let size = self
                    .data
                    .len()
                    .saturating_add(value.len())
                    .saturating_add(1);
                if size > self.max_event_bytes {
                    self.overflow(out);
                    return;
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.last_id = value.into_owned(),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits for a u64: ignored, like any invalid value.
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Result<SseEvent, SseError>>) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(Ok(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data,
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
        }));
    }
}

fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

fn push_data(out: &mut String, data: &str) {
    // Every line of `data` becomes a `data:` line, so the parser joins them back with `\n`.
    let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// `data: <data>\n\n` (a multi-line `data` becomes several `data:` lines; CR and CRLF inside it
/// come back as `\n`).
pub fn data_frame(data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len().saturating_add(8));
    push_data(&mut out, data);
    Bytes::from(out)
}

/// `event: <name>\ndata: <data>\n\n`, e.g. `event: x402-receipt` (line breaks in `name` become
/// spaces).
pub fn event_frame(name: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len().saturating_add(name.len()).saturating_add(16));
    out.push_str("event: ");
    out.push_str(&single_line(name));
    out.push('\n');
    push_data(&mut out, data);
    Bytes::from(out)
}

/// `data: [DONE]\n\n`, the end of an OpenAI stream.
pub fn done_frame() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// `: <text>\n\n`, a comment (keep-alive) that every client ignores.
pub fn comment_frame(text: &str) -> Bytes {
    Bytes::from(format!(": {}\n\n", single_line(text)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Result<SseEvent, SseError>> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.feed(c)).collect()
    }

    fn ok(events: Vec<Result<SseEvent, SseError>>) -> Vec<SseEvent> {
        events.into_iter().map(Result::unwrap).collect()
    }

    const SAMPLE: &str = "\u{feff}: keep-alive\r\n\
        data: {\"a\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n\
        event: ping\rdata:no space\rdata:  two spaces\r\r\
        id: 7\ndata\ndata: x\n\n\
        retry: 1500\nunknown: field\n\n\
        data: [DONE]\n\n\
        event: x402-receipt\ndata: eyJ9\n\n\
        data: unterminated";

    fn sample_events() -> Vec<SseEvent> {
        vec![
            SseEvent::message("{\"a\":\"h\u{e9}llo \u{1f600}\"}"),
            SseEvent {
                event: Some("ping".into()),
                data: "no space\n two spaces".into(),
                id: None,
            },
            SseEvent {
                event: None,
                data: "\nx".into(),
                id: Some("7".into()),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
                id: Some("7".into()),
            },
            SseEvent {
                event: Some("x402-receipt".into()),
                data: "eyJ9".into(),
                id: Some("7".into()),
            },
        ]
    }

    #[test]
    fn the_whatwg_rules_are_applied_to_a_whole_stream() {
        let mut parser = SseParser::new();
        let events = ok(parser.feed(SAMPLE.as_bytes()));
        assert_eq!(events, sample_events());
        assert!(events[3].is_done());
        assert!(!events[4].is_message());
        assert_eq!(parser.retry(), Some(1500));
        assert_eq!(parser.last_event_id(), "7");
        assert!(
            parser.has_pending(),
            "the unterminated event is held, not dispatched"
        );
    }

    #[test]
    fn an_sse_stream_split_at_every_byte_parses_to_the_same_events() {
        let bytes = SAMPLE.as_bytes();
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(ok(parse_all(&single)), sample_events());
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(ok(parse_all(&[a, b])), sample_events(), "cut at {cut}");
        }
    }

    #[test]
    fn a_cr_at_the_end_of_a_chunk_and_a_lf_at_the_start_of_the_next_are_one_line_end() {
        let events = ok(parse_all(&[
            b"data: a\r",
            b"\n",
            b"\r",
            b"\ndata: b\r\n\r\n",
        ]));
        assert_eq!(events, vec![SseEvent::message("a"), SseEvent::message("b")]);
        // A CR then an empty chunk then a LF: still one line end.
        let events = ok(parse_all(&[b"data: a\r", b"", b"\n\n"]));
        assert_eq!(events, vec![SseEvent::message("a")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_and_an_event_without_data_is_not_dispatched() {
        let events = ok(parse_all(&[b"data: \xff\xfe ok\n\nevent: empty\n\n:c\n\n"]));
        assert_eq!(events, vec![SseEvent::message("\u{fffd}\u{fffd} ok")]);
    }

    #[test]
    fn an_oversized_event_is_dropped_and_the_parser_resumes_at_the_next_event() {
        let mut parser = SseParser::with_max_event_bytes(16);
        let mut events = parser.feed(b"data: 0123456789");
        events.extend(parser.feed(b"abcdef\ndata: more\n\ndata: fine\n\n"));
        assert_eq!(
            events,
            vec![
                Err(SseError::EventTooLarge { limit: 16 }),
                Ok(SseEvent::message("fine"))
            ]
        );
        // Data accumulated over many short lines is bounded too.
        let mut parser = SseParser::with_max_event_bytes(16);
        let events = parser.feed(b"data: 12345\ndata: 12345\ndata: 12345\n\ndata: ok\n\n");
        assert_eq!(
            events,
            vec![
                Err(SseError::EventTooLarge { limit: 16 }),
                Ok(SseEvent::message("ok"))
            ]
        );
    }

    #[test]
    fn written_frames_parse_back_to_their_events() {
        let mut parser = SseParser::new();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&data_frame("{\"x\":1}"));
        bytes.extend_from_slice(&data_frame("two\nlines\r\nand\rmore"));
        bytes.extend_from_slice(&comment_frame("keep\nalive"));
        bytes.extend_from_slice(&done_frame());
        bytes.extend_from_slice(&event_frame(RECEIPT_EVENT, "abc"));
        bytes.extend_from_slice(&event_frame("bad\nname", ""));
        assert_eq!(
            &event_frame(RECEIPT_EVENT, "abc")[..],
            b"event: x402-receipt\ndata: abc\n\n"
        );
        assert_eq!(&data_frame("x")[..], b"data: x\n\n");
        let events = ok(parser.feed(&bytes));
        assert_eq!(
            events,
            vec![
                SseEvent::message("{\"x\":1}"),
                SseEvent::message("two\nlines\nand\nmore"),
                SseEvent::message(DONE),
                SseEvent {
                    event: Some(RECEIPT_EVENT.into()),
                    data: "abc".into(),
                    id: None
                },
                SseEvent {
                    event: Some("bad name".into()),
                    data: String::new(),
                    id: None
                },
            ]
        );
        let with_id = SseEvent {
            event: Some("e".into()),
            data: "d".into(),
            id: Some("9".into()),
        };
        assert_eq!(
            ok(SseParser::new().feed(&with_id.to_frame())),
            vec![with_id]
        );
    }

    proptest! {
        #[test]
        fn random_splits_of_a_stream_parse_to_the_same_events(
            cuts in proptest::collection::vec(0usize..=SAMPLE.len(), 0..12)
        ) {
            let bytes = SAMPLE.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(ok(parse_all(&chunks)), sample_events());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_random_splits_agree_with_one_feed(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), Just(b'd'), Just(b'a'),
                    Just(b't'), Just(0xef), Just(0xbb), Just(0xbf), any::<u8>()
                ],
                0..256,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = SseParser::with_max_event_bytes(32).feed(&bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parser = SseParser::with_max_event_bytes(32);
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.extend(parser.feed(&bytes[start..cut]));
                start = cut;
            }
            pieces.extend(parser.feed(&bytes[start..]));
            prop_assert_eq!(pieces, whole);
        }
    }
}
