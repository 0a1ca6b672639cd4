//! A corpus of malformed requests against the real reference provider (its paid
//! `POST /v1/inference` and its free routes) and the real facilitator (`/verify`, `/settle`), over
//! raw TCP on 127.0.0.1 so that any bytes can be sent: oversized headers, invalid base64, JSON and
//! base58, keys and signatures of the wrong length, numbers out of range, unicode and control
//! characters, wrong types, empty values, duplicated headers, oversized bodies, wrong methods and
//! paths.
//!
//! Every request must be answered, with a 4xx and a JSON body carrying an `error` code, never a
//! 5xx. The only exceptions are requests that hyper itself refuses before our code sees them
//! (header sections over its ~400 KiB buffer, more than 100 headers, bytes that are not legal in
//! a header, conflicting `Content-Length`s): hyper answers those with a bare `431`/`400` (or
//! closes the connection while the client is still sending); they are counted separately. After
//! the corpus, `GET /health` answers 200 and an `Agent` still pays a request on its session.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use solana_sdk::signature::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x402pp_client::Agent;
use x402pp_protocol::{Hash32, Id16};
use x402pp_provider::INFERENCE_PATH;
use x402pp_testkit::support::bounded;
use x402pp_testkit::{test_budget, test_route, Facilitator, World, LAMPORTS_PER_SOL};

const PRICE: u64 = 1_000;
const KIB: usize = 1024;
/// Random hostile headers sent to the live provider after the fixed corpus.
const LIVE_FUZZ_CASES: u32 = 500;

/// A localnet, our facilitator over HTTP, and our reference provider using it, served as the
/// binary serves it (the per-IP limit reads the peer address).
async fn world() -> World {
    World::builder()
        .facilitator(Facilitator::Http)
        .fee_payer_lamports(10 * LAMPORTS_PER_SOL)
        .route(INFERENCE_PATH, test_route(PRICE))
        .peer_addresses()
        .agent_budget(test_budget(PRICE))
        .start()
        .await
        .unwrap()
}

/// An agent with funds, paying with sessions.
async fn agent(world: &World) -> Agent {
    world.agent().await.unwrap()
}

async fn paid_request(world: &World, agent: &Agent, prompt: &str) -> (u16, String) {
    let request = reqwest::Client::new()
        .post(format!("http://{}{INFERENCE_PATH}", world.provider().addr))
        .header("content-type", "application/json")
        .body(json!({ "prompt": prompt }).to_string())
        .build()
        .unwrap();
    let response = agent.send(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

// ---- raw HTTP -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Provider,
    Facilitator,
}

/// What is acceptable besides a 4xx with a JSON error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// Nothing else.
    Only4xxJson,
    /// A free route: a 200 is fine too (payment headers are ignored there).
    Free,
    /// A facilitator request that parses: a 200 negative verdict is the x402 answer.
    Verdict,
    /// Refused by hyper before our code: a bare 431/400, or the connection closed mid-send.
    Hyper,
}

struct Case {
    category: &'static str,
    what: String,
    target: Target,
    raw: Vec<u8>,
    allow: Allow,
}

/// `method path` with `headers` and `body`, `Connection: close` and a correct `Content-Length`
/// unless the headers set one.
fn http(method: &str, path: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    let mut has_length = false;
    for (name, value) in headers {
        has_length |= name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    if !has_length {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Sends `raw` and reads the answer until the server closes; `None` when the connection closed
/// (or was reset) before any answer.
async fn send(addr: SocketAddr, raw: Vec<u8>) -> Option<Answer> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Write concurrently: the server may answer (and stop reading) before the request is sent.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&raw).await;
        let _ = write.flush().await;
        write
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within 30 s"),
        }
    }
    drop(writer.await);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

// ---- the corpus -----------------------------------------------------------------------------------

fn b64(text: &str) -> Vec<u8> {
    STANDARD.encode(text).into_bytes()
}

fn b58(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

/// Hostile JSON texts for numeric and string fields.
const NUMBERS: &[&str] = &[
    "18446744073709551616",
    "-1",
    "1.5",
    "1e30",
    "-0",
    "\"18446744073709551616\"",
    "\"-1\"",
    "\"1e30\"",
    "\"1.0\"",
    "\" 1000\"",
    "\"\"",
    "null",
    "[]",
    "{}",
    "true",
    "\"１０００\"",
];

const STRINGS: &[&str] = &[
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é漢字🦀\\u202e\"",
    "\"0OIl\"",
    "\"\\r\\n\\t\\u0001\"",
    "1",
    "null",
    "[]",
    "{}",
];

struct Corpus {
    cases: Vec<Case>,
}

impl Corpus {
    fn push(
        &mut self,
        category: &'static str,
        what: String,
        target: Target,
        raw: Vec<u8>,
        allow: Allow,
    ) {
        self.cases.push(Case {
            category,
            what,
            target,
            raw,
            allow,
        });
    }

    /// `POST /v1/inference` with one extra header.
    fn paid(&mut self, category: &'static str, name: &str, value: Vec<u8>) {
        self.paid_with(
            category,
            &[(name, value)],
            br#"{"prompt":"hi"}"#,
            Allow::Only4xxJson,
        );
    }

    fn paid_with(
        &mut self,
        category: &'static str,
        headers: &[(&str, Vec<u8>)],
        body: &[u8],
        allow: Allow,
    ) {
        let what = format!(
            "POST {INFERENCE_PATH} {}",
            headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", preview(v)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let raw = http("POST", INFERENCE_PATH, headers, body);
        self.push(category, what, Target::Provider, raw, allow);
    }

    /// `POST path` on the facilitator with `body`.
    fn facilitator(&mut self, category: &'static str, path: &str, body: &[u8], allow: Allow) {
        let raw = http(
            "POST",
            path,
            &[("Content-Type", b"application/json".to_vec())],
            body,
        );
        self.push(
            category,
            format!("POST {path} {}", preview(body)),
            Target::Facilitator,
            raw,
            allow,
        );
    }
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    if bytes.len() > 80 {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// The live session the corpus's vouchers aim at: its address, its incarnation (`opened_slot`)
/// and the receipt head its next voucher commits to (hex).
#[derive(Clone)]
struct Live {
    session: String,
    opened_slot: u64,
    receipt_head: String,
}

/// The live session's next voucher as JSON (signed by nobody), with `field` replaced by the raw
/// JSON `value`.
fn voucher_with(live: &Live, field: &str, value: &str) -> String {
    let mut v = json!({
        "session": live.session,
        "openedSlot": live.opened_slot,
        "seq": 2,
        "cumulative": (2 * PRICE).to_string(),
        "receiptHead": live.receipt_head,
        "signature": b58(&[7u8; 64]),
    });
    v[field] = json!("__raw__");
    v.to_string().replace("\"__raw__\"", value)
}

fn intent_json(world: &World) -> Value {
    json!({
        "intentId": Id16([1; 16]),
        "capability": "inference",
        "maxPricePerRequest": PRICE.to_string(),
        "asset": world.localnet.usdc_mint().to_string(),
        "network": world.network,
        "sla": {"maxLatencyMs": 5000, "minUptimePercent": 0},
        "agent": b58(&[3u8; 32]),
        "expiresAt": 4_000_000_000_i64,
    })
}

fn requirements_json(world: &World) -> Value {
    json!({
        "scheme": "exact",
        "network": world.network,
        "amount": PRICE.to_string(),
        "asset": world.localnet.usdc_mint().to_string(),
        "payTo": world.provider_key().pubkey().to_string(),
        "maxTimeoutSeconds": 60,
        "extra": {"feePayer": world.fee_payer.pubkey().to_string()},
    })
}

fn payment_payload_json(world: &World, transaction: &str) -> Value {
    json!({
        "x402Version": 2,
        "accepted": requirements_json(world),
        "payload": {"transaction": transaction},
    })
}

fn corpus(world: &World, live: &Live) -> Corpus {
    use x402pp_protocol::headers::{PAYMENT_SIGNATURE, X402_INTENT, X402_SESSION_ID, X402_VOUCHER};
    let mut c = Corpus { cases: Vec::new() };
    let session = live.session.as_str();
    let valid_voucher = |field: &str, value: &str| b64(&voucher_with(live, field, value));
    let session_b = session.as_bytes().to_vec();

    // 1. Oversized header values: ours (8 KiB codec limit, 32 KiB header section) answer JSON 431;
    //    1 MiB is over hyper's own buffer.
    for name in [
        X402_VOUCHER,
        X402_SESSION_ID,
        X402_INTENT,
        PAYMENT_SIGNATURE,
        "X-Custom",
    ] {
        for size in [9 * KIB, 64 * KIB] {
            let value = vec![b'A'; size];
            if name == X402_VOUCHER || name == X402_INTENT || name == PAYMENT_SIGNATURE {
                c.paid("oversized header", name, value.clone());
            }
            c.paid_with(
                "oversized header",
                &[(X402_SESSION_ID, session_b.clone()), (name, value)],
                br#"{"prompt":"hi"}"#,
                Allow::Only4xxJson,
            );
        }
        c.paid_with(
            "oversized header",
            &[(name, vec![b'A'; 1024 * KIB])],
            b"{}",
            Allow::Hyper,
        );
    }
    // A voucher just over the codec limit in base64 of valid-looking JSON.
    let padded = voucher_with(live, "signature", &format!("\"{}\"", "1".repeat(7 * KIB)));
    c.paid_with(
        "oversized header",
        &[
            (X402_SESSION_ID, session_b.clone()),
            (X402_VOUCHER, b64(&padded)),
        ],
        b"{}",
        Allow::Only4xxJson,
    );
    // Many headers: 60 of 1 KiB (60 KiB in total, under hyper's limits, over ours).
    let many: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("X-Pad-{i}"), vec![b'p'; KIB]))
        .collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    c.paid_with("oversized header", &many, b"{}", Allow::Only4xxJson);
    // More than hyper's 100 headers.
    let too_many: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| (format!("X-Pad-{i}"), b"p".to_vec()))
        .collect();
    let too_many: Vec<(&str, Vec<u8>)> = too_many
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    c.paid_with("oversized header", &too_many, b"{}", Allow::Hyper);

    // 2. Invalid base64 in every base64 header.
    for value in [
        "%%%",
        "AAA",
        "A===",
        "====",
        "QUJD RA==",
        "-_-_",
        "AAAA\tAAAA",
        "YQ",
        "{{{{",
    ] {
        for name in [X402_VOUCHER, X402_INTENT, PAYMENT_SIGNATURE] {
            if name == X402_VOUCHER {
                c.paid_with(
                    "invalid base64",
                    &[
                        (X402_SESSION_ID, session_b.clone()),
                        (name, value.as_bytes().to_vec()),
                    ],
                    b"{}",
                    Allow::Only4xxJson,
                );
            } else {
                c.paid("invalid base64", name, value.as_bytes().to_vec());
            }
        }
    }

    // 3. Invalid JSON, base64-encoded and raw.
    for text in [
        "{",
        "}",
        "null",
        "[]",
        "\"voucher\"",
        "1",
        "{\"session\":}",
        "{\"a\":1}{}",
        "\u{feff}{}",
        "{\"seq\":1,}",
        "{'seq':1}",
        "{\"seq\":1",
        "[{\"seq\":1}]",
        "{\"seq\":NaN}",
        "{\"seq\":Infinity}",
    ] {
        for name in [X402_VOUCHER, X402_INTENT, PAYMENT_SIGNATURE] {
            c.paid_with(
                "invalid JSON",
                &[(X402_SESSION_ID, session_b.clone()), (name, b64(text))],
                b"{}",
                Allow::Only4xxJson,
            );
            if name != X402_VOUCHER {
                c.paid("invalid JSON", name, b64(text));
            }
        }
        if text.starts_with('{') {
            c.paid_with(
                "invalid JSON",
                &[
                    (X402_SESSION_ID, session_b.clone()),
                    (X402_VOUCHER, text.as_bytes().to_vec()),
                ],
                b"{}",
                Allow::Only4xxJson,
            );
        }
    }
    // The voucher's JSON as UTF-16.
    let utf16: Vec<u8> = voucher_with(live, "seq", "2")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    c.paid_with(
        "invalid JSON",
        &[
            (X402_SESSION_ID, session_b.clone()),
            (X402_VOUCHER, STANDARD.encode(utf16).into_bytes()),
        ],
        b"{}",
        Allow::Only4xxJson,
    );

    // 4. Invalid base58.
    for bad in [
        "0OIl",
        "",
        " ",
        "abc!@#",
        "11111111111111111111111111111111O",
        "é漢字",
        "1 1",
    ] {
        c.paid_with(
            "invalid base58",
            &[
                (X402_SESSION_ID, bad.as_bytes().to_vec()),
                (X402_VOUCHER, valid_voucher("seq", "2")),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
        let quoted = serde_json::to_string(bad).unwrap();
        for field in ["session", "signature"] {
            c.paid_with(
                "invalid base58",
                &[
                    (X402_SESSION_ID, session_b.clone()),
                    (X402_VOUCHER, valid_voucher(field, &quoted)),
                ],
                b"{}",
                Allow::Only4xxJson,
            );
        }
        let mut intent = intent_json(world);
        intent["agent"] = json!(bad);
        c.paid("invalid base58", X402_INTENT, b64(&intent.to_string()));
    }

    // 5. Wrong lengths: 31/33-byte keys, 63/65-byte signatures, 15/17-byte ids.
    for len in [0usize, 1, 31, 33, 64] {
        let key = b58(&vec![9u8; len]);
        c.paid_with(
            "wrong length",
            &[
                (X402_SESSION_ID, key.clone().into_bytes()),
                (X402_VOUCHER, valid_voucher("seq", "2")),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
        c.paid_with(
            "wrong length",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (
                    X402_VOUCHER,
                    valid_voucher("session", &format!("\"{key}\"")),
                ),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
        for field in ["agent", "asset"] {
            let mut intent = intent_json(world);
            intent[field] = json!(key);
            c.paid("wrong length", X402_INTENT, b64(&intent.to_string()));
        }
        let mut payload = payment_payload_json(world, "AAAA");
        payload["accepted"]["payTo"] = json!(key);
        c.paid("wrong length", PAYMENT_SIGNATURE, b64(&payload.to_string()));
    }
    for len in [0usize, 32, 63, 65, 128] {
        let signature = format!("\"{}\"", b58(&vec![7u8; len]));
        c.paid_with(
            "wrong length",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, valid_voucher("signature", &signature)),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }
    for len in [0usize, 31, 33, 64] {
        let head = format!("\"{}\"", hex_of(&vec![9u8; len]));
        c.paid_with(
            "wrong length",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, valid_voucher("receiptHead", &head)),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }
    for len in [15usize, 17, 0] {
        let mut intent = intent_json(world);
        intent["intentId"] = json!(hex_of(&vec![1u8; len]));
        c.paid("wrong length", X402_INTENT, b64(&intent.to_string()));
    }
    // A transaction of every interesting size, base64 in the exact payload.
    for len in [0usize, 1, 64, 1232, 1233, 4000] {
        let payload = payment_payload_json(world, &STANDARD.encode(vec![1u8; len]));
        c.paid("wrong length", PAYMENT_SIGNATURE, b64(&payload.to_string()));
    }

    // 6. Numbers out of range, negative, floats, exponents, as strings.
    for n in NUMBERS {
        for field in ["seq", "openedSlot", "cumulative"] {
            c.paid_with(
                "number out of range",
                &[
                    (X402_SESSION_ID, session_b.clone()),
                    (X402_VOUCHER, valid_voucher(field, n)),
                ],
                b"{}",
                Allow::Only4xxJson,
            );
        }
        for pointer in [
            "maxPricePerRequest",
            "expiresAt",
            "sla/maxLatencyMs",
            "sla/minUptimePercent",
        ] {
            let mut intent = intent_json(world);
            let (parent, key) = match pointer.split_once('/') {
                Some((p, k)) => (Some(p), k),
                None => (None, pointer),
            };
            let at = match parent {
                Some(p) => &mut intent[p],
                None => &mut intent,
            };
            at[key] = json!("__raw__");
            let text = intent.to_string().replace("\"__raw__\"", n);
            c.paid("number out of range", X402_INTENT, b64(&text));
        }
        for pointer in [
            "/x402Version",
            "/accepted/maxTimeoutSeconds",
            "/accepted/amount",
        ] {
            let mut payload = payment_payload_json(world, "AAAA");
            *payload.pointer_mut(pointer).unwrap() = json!("__raw__");
            c.paid(
                "number out of range",
                PAYMENT_SIGNATURE,
                b64(&payload.to_string().replace("\"__raw__\"", n)),
            );
        }
    }
    // Values that parse but cannot pay: seq and cumulative at u64::MAX on the real session.
    for (seq, cumulative) in [
        ("18446744073709551615", "\"18446744073709551615\""),
        ("0", "\"0\""),
        ("1", "\"1000\""),
        ("2", "\"0\""),
    ] {
        let voucher =
            b64(&voucher_with(live, "seq", seq).replace(&format!("\"{}\"", 2 * PRICE), cumulative));
        c.paid_with(
            "number out of range",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, voucher),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }

    // Well-formed session ids of accounts that are not sessions (a mint, a wallet, programs, the
    // vault-less void), and a voucher that matches them.
    for account in [
        world.localnet.usdc_mint().to_string(),
        world.provider_key().pubkey().to_string(),
        world.fee_payer.pubkey().to_string(),
        "11111111111111111111111111111111".to_owned(),
        x402pp_solana::escrow::PROGRAM_ID.to_string(),
        x402pp_solana::token::TOKEN_PROGRAM_ID.to_string(),
        "SysvarC1ock11111111111111111111111111111111".to_owned(),
        b58(&[0xee; 32]),
    ] {
        let other = Live {
            session: account.clone(),
            ..live.clone()
        };
        let voucher = b64(&voucher_with(&other, "seq", "1"));
        c.paid_with(
            "wrong account",
            &[
                (X402_SESSION_ID, account.clone().into_bytes()),
                (X402_VOUCHER, voucher),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }

    // JSON nested up to and past serde_json's 128 levels, in the free-form fields that are
    // forwarded: what the provider accepts must still be accepted by the facilitator.
    for depth in [100, 125, 126, 127, 128, 129, 1_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for field in ["payload", "extensions"] {
            let mut payload = payment_payload_json(world, "AAAA");
            payload[field] = json!("__nested__");
            let text = payload.to_string().replace("\"__nested__\"", &nested);
            c.paid("nesting depth", PAYMENT_SIGNATURE, b64(&text));
        }
        let mut payload = payment_payload_json(world, "AAAA");
        payload["accepted"]["extra"]["memo"] = json!("__nested__");
        let text = payload.to_string().replace("\"__nested__\"", &nested);
        c.paid("nesting depth", PAYMENT_SIGNATURE, b64(&text));
        let voucher = voucher_with(live, "seq", &nested);
        c.paid_with(
            "nesting depth",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, b64(&voucher)),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }

    // 7. Unicode and control characters: in JSON strings, and as raw header bytes.
    for s in STRINGS {
        for field in ["session", "receiptHead", "signature"] {
            c.paid_with(
                "unicode and control characters",
                &[
                    (X402_SESSION_ID, session_b.clone()),
                    (X402_VOUCHER, valid_voucher(field, s)),
                ],
                b"{}",
                Allow::Only4xxJson,
            );
        }
        for field in ["capability", "network"] {
            let mut intent = intent_json(world);
            intent[field] = json!("__raw__");
            c.paid(
                "unicode and control characters",
                X402_INTENT,
                b64(&intent.to_string().replace("\"__raw__\"", s)),
            );
        }
        let mut payload = payment_payload_json(world, "AAAA");
        payload["accepted"]["network"] = json!("__raw__");
        c.paid(
            "unicode and control characters",
            PAYMENT_SIGNATURE,
            b64(&payload.to_string().replace("\"__raw__\"", s)),
        );
    }
    // Header bytes: obs-text (0x80-0xFF) and tabs are legal for hyper; controls are not.
    for value in [
        "é漢字🦀".as_bytes().to_vec(),
        vec![0x80, 0xff, 0xfe],
        b"\tAAAA\t".to_vec(),
        [session.as_bytes(), "é".as_bytes()].concat(),
    ] {
        c.paid_with(
            "unicode and control characters",
            &[
                (X402_SESSION_ID, value.clone()),
                (X402_VOUCHER, valid_voucher("seq", "2")),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
        c.paid_with(
            "unicode and control characters",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, value.clone()),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
        c.paid("unicode and control characters", X402_INTENT, value.clone());
        c.paid("unicode and control characters", PAYMENT_SIGNATURE, value);
    }
    for value in [
        vec![0u8],
        vec![b'A', 0x01, b'B'],
        vec![0x7f],
        b"A\rB".to_vec(),
    ] {
        c.paid_with(
            "unicode and control characters",
            &[(X402_SESSION_ID, session_b.clone()), (X402_VOUCHER, value)],
            b"{}",
            Allow::Hyper,
        );
    }

    // 8. Wrong types for whole headers and for fields.
    for text in [
        "[]",
        "1",
        "\"x\"",
        "true",
        "null",
        "{\"session\":[1,2]}",
        "{\"signature\":{}}",
    ] {
        c.paid_with(
            "wrong type",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, b64(text)),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }
    for field in [
        "session",
        "openedSlot",
        "seq",
        "cumulative",
        "receiptHead",
        "signature",
    ] {
        for value in ["[]", "{}", "true", "null"] {
            c.paid_with(
                "wrong type",
                &[
                    (X402_SESSION_ID, session_b.clone()),
                    (X402_VOUCHER, valid_voucher(field, value)),
                ],
                b"{}",
                Allow::Only4xxJson,
            );
        }
    }
    for field in ["accepted", "payload", "resource", "extensions"] {
        for value in ["[]", "1", "\"x\"", "true"] {
            let mut payload = payment_payload_json(world, "AAAA");
            payload[field] = json!("__raw__");
            c.paid(
                "wrong type",
                PAYMENT_SIGNATURE,
                b64(&payload.to_string().replace("\"__raw__\"", value)),
            );
        }
    }
    for field in ["sla", "network", "intentId"] {
        let mut intent = intent_json(world);
        intent[field] = json!([1, 2, 3]);
        c.paid("wrong type", X402_INTENT, b64(&intent.to_string()));
    }

    // 9. Empty values.
    for name in [
        X402_VOUCHER,
        X402_SESSION_ID,
        X402_INTENT,
        PAYMENT_SIGNATURE,
    ] {
        c.paid("empty value", name, Vec::new());
        c.paid("empty value", name, b"   ".to_vec());
    }
    c.paid_with(
        "empty value",
        &[(X402_SESSION_ID, session_b.clone())],
        b"",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "empty value",
        &[
            (X402_SESSION_ID, session_b.clone()),
            (X402_VOUCHER, Vec::new()),
        ],
        b"",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "empty value",
        &[(X402_VOUCHER, valid_voucher("seq", "2"))],
        b"",
        Allow::Only4xxJson,
    );
    c.paid("empty value", X402_INTENT, b64("{}"));
    c.paid("empty value", PAYMENT_SIGNATURE, b64("{}"));

    // 10. Duplicated headers.
    let good = valid_voucher("seq", "2");
    for (first, second) in [
        (good.clone(), b"%%%".to_vec()),
        (b"%%%".to_vec(), good.clone()),
        (good.clone(), good.clone()),
    ] {
        c.paid_with(
            "duplicated header",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, first),
                (X402_VOUCHER, second),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }
    c.paid_with(
        "duplicated header",
        &[
            (X402_SESSION_ID, session_b.clone()),
            (X402_SESSION_ID, b"0OIl".to_vec()),
            (X402_VOUCHER, good.clone()),
        ],
        b"{}",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "duplicated header",
        &[
            (X402_SESSION_ID, b58(&[5u8; 32]).into_bytes()),
            (X402_SESSION_ID, session_b.clone()),
            (X402_VOUCHER, good.clone()),
        ],
        b"{}",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "duplicated header",
        &[
            (X402_INTENT, b64(&intent_json(world).to_string())),
            (X402_INTENT, b"%%%".to_vec()),
        ],
        b"{}",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "duplicated header",
        &[
            (PAYMENT_SIGNATURE, b"%%%".to_vec()),
            (X402_VOUCHER, good.clone()),
        ],
        b"{}",
        Allow::Only4xxJson,
    );
    c.paid_with(
        "duplicated header",
        &[
            ("Content-Length", b"2".to_vec()),
            ("Content-Length", b"3".to_vec()),
        ],
        b"{}",
        Allow::Hyper,
    );

    // 11. Oversized bodies (the provider takes 1 MiB, the facilitator 64 KiB).
    for size in [KIB * KIB + 1, 4 * KIB * KIB] {
        let body = vec![b' '; size];
        c.paid_with("oversized body", &[], &body, Allow::Only4xxJson);
        c.paid_with(
            "oversized body",
            &[
                (X402_SESSION_ID, session_b.clone()),
                (X402_VOUCHER, good.clone()),
            ],
            &body,
            Allow::Only4xxJson,
        );
        c.paid_with(
            "oversized body",
            &[
                (X402_SESSION_ID, session_b.clone()),
                ("Content-Length", size.to_string().into_bytes()),
            ],
            b"{}",
            Allow::Only4xxJson,
        );
    }
    let mut chunked = Vec::new();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * KIB).as_bytes());
        chunked.extend_from_slice(&vec![b'x'; 64 * KIB]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    c.paid_with(
        "oversized body",
        &[("Transfer-Encoding", b"chunked".to_vec())],
        &chunked,
        Allow::Only4xxJson,
    );
    c.paid_with(
        "oversized body",
        &[
            (X402_SESSION_ID, session_b.clone()),
            (X402_VOUCHER, good.clone()),
            ("Transfer-Encoding", b"chunked".to_vec()),
        ],
        &chunked,
        Allow::Only4xxJson,
    );
    for size in [64 * KIB + 1, KIB * KIB] {
        for path in ["/verify", "/settle"] {
            c.facilitator(
                "oversized body",
                path,
                &vec![b' '; size],
                Allow::Only4xxJson,
            );
        }
    }

    // 12. Wrong methods and paths.
    for (method, path) in [
        ("GET", INFERENCE_PATH),
        ("PUT", INFERENCE_PATH),
        ("DELETE", INFERENCE_PATH),
        ("POST", "/health"),
        ("DELETE", "/metrics"),
        ("GET", "/nope"),
        ("POST", "/v1/inference/"),
        ("GET", "/%00"),
    ] {
        c.push(
            "wrong method or path",
            format!("{method} {path}"),
            Target::Provider,
            http(method, path, &[], b""),
            Allow::Only4xxJson,
        );
    }
    for (method, path) in [
        ("GET", "/verify"),
        ("PUT", "/settle"),
        ("POST", "/supported"),
        ("GET", "/nope"),
    ] {
        c.push(
            "wrong method or path",
            format!("{method} {path}"),
            Target::Facilitator,
            http(method, path, &[], b""),
            Allow::Only4xxJson,
        );
    }

    // 13. Free routes with junk payment headers: served (headers ignored) or refused with JSON.
    for name in [
        X402_VOUCHER,
        X402_SESSION_ID,
        X402_INTENT,
        PAYMENT_SIGNATURE,
    ] {
        for value in [
            b"%%%".to_vec(),
            vec![b'A'; 9 * KIB],
            vec![b'A'; 64 * KIB],
            "é".as_bytes().to_vec(),
        ] {
            for path in ["/health", "/metrics"] {
                c.push(
                    "free route",
                    format!("GET {path} {name}: {}", preview(&value)),
                    Target::Provider,
                    http("GET", path, &[(name, value.clone())], b""),
                    Allow::Free,
                );
            }
        }
    }

    // 14. Facilitator bodies.
    let request = json!({
        "x402Version": 2,
        "paymentPayload": payment_payload_json(world, "AAAA"),
        "paymentRequirements": requirements_json(world),
    });
    for path in ["/verify", "/settle"] {
        for body in [
            "".to_string(),
            "{".to_string(),
            "null".to_string(),
            "[]".to_string(),
            "\u{feff}{}".to_string(),
            "{}".to_string(),
            "{\"x402Version\":2}".to_string(),
            format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)),
        ] {
            c.facilitator(
                "facilitator body",
                path,
                body.as_bytes(),
                Allow::Only4xxJson,
            );
        }
        for bytes in [vec![0xff, 0xfe, 0x00], vec![0u8; 100]] {
            c.facilitator("facilitator body", path, &bytes, Allow::Only4xxJson);
        }
        for pointer in [
            "/x402Version",
            "/paymentPayload/x402Version",
            "/paymentRequirements/maxTimeoutSeconds",
            "/paymentRequirements/network",
            "/paymentPayload/accepted/network",
        ] {
            for n in NUMBERS.iter().chain(STRINGS) {
                let mut r = request.clone();
                *r.pointer_mut(pointer).unwrap() = json!("__raw__");
                let body = r.to_string().replace("\"__raw__\"", n);
                // A body that still parses is answered with a negative verdict (x402's 200).
                let allow =
                    if serde_json::from_str::<x402pp_protocol::x402::FacilitatorRequest>(&body)
                        .is_ok()
                    {
                        Allow::Verdict
                    } else {
                        Allow::Only4xxJson
                    };
                c.facilitator("facilitator body", path, body.as_bytes(), allow);
            }
        }
        for pointer in [
            "/paymentRequirements/amount",
            "/paymentRequirements/payTo",
            "/paymentPayload/payload/transaction",
            "/paymentRequirements/extra/feePayer",
        ] {
            for n in NUMBERS.iter().chain(STRINGS) {
                let mut r = request.clone();
                *r.pointer_mut(pointer).unwrap() = json!("__raw__");
                let body = r.to_string().replace("\"__raw__\"", n);
                let allow =
                    if serde_json::from_str::<x402pp_protocol::x402::FacilitatorRequest>(&body)
                        .is_ok()
                    {
                        Allow::Verdict
                    } else {
                        Allow::Only4xxJson
                    };
                c.facilitator("facilitator body", path, body.as_bytes(), allow);
            }
        }
        c.push(
            "oversized header",
            format!("POST {path} with a 64 KiB header"),
            Target::Facilitator,
            http("POST", path, &[("X-Custom", vec![b'A'; 64 * KIB])], b"{"),
            Allow::Only4xxJson,
        );
        c.push(
            "oversized header",
            format!("POST {path} with a 1 MiB header"),
            Target::Facilitator,
            http("POST", path, &[("X-Custom", vec![b'A'; 1024 * KIB])], b"{"),
            Allow::Hyper,
        );
    }
    c
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random hostile replacements of one field of a valid voucher, intent or payment header, sent
/// to the live provider: each must get a 4xx with a JSON error. Returns the number of inputs.
fn fuzz_live_headers(world: &World, live: &Live, cases: u32) -> u32 {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use x402pp_protocol::headers::{PAYMENT_SIGNATURE, X402_INTENT, X402_VOUCHER};

    let session = live.session.as_str();
    let voucher: Value = serde_json::from_str(&voucher_with(live, "seq", "2")).unwrap();
    let samples = [
        (X402_VOUCHER, voucher),
        (X402_INTENT, intent_json(world)),
        (
            PAYMENT_SIGNATURE,
            payment_payload_json(world, &STANDARD.encode([1u8; 300])),
        ),
    ];
    let raw_texts: Vec<&'static str> = NUMBERS.iter().chain(STRINGS).copied().collect();
    let replacement = prop_oneof![
        3 => proptest::sample::select(raw_texts).prop_map(|t| t.to_owned()),
        1 => any::<String>().prop_map(|s| Value::String(s).to_string()),
        1 => proptest::collection::vec(any::<u8>(), 0..70)
            .prop_map(|b| Value::String(b58(&b)).to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (1usize..200).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
    ];
    let strategy = (
        0..samples.len(),
        any::<prop::sample::Index>(),
        replacement,
        any::<bool>(),
    );
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(which, pick, with, raw_json)| {
            let (name, sample) = &samples[which];
            let mut pointers = Vec::new();
            collect_pointers(sample, String::new(), &mut pointers);
            let pointer = &pointers[pick.index(pointers.len())];
            let mut value = sample.clone();
            *value.pointer_mut(pointer).unwrap() = json!("__raw__");
            let text = value.to_string().replace("\"__raw__\"", &with);
            let header = if raw_json {
                text.into_bytes()
            } else {
                b64(&text)
            };
            let mut headers = vec![(*name, header)];
            if *name == X402_VOUCHER {
                headers.push((
                    x402pp_protocol::headers::X402_SESSION_ID,
                    session.as_bytes().to_vec(),
                ));
            }
            let raw = http("POST", INFERENCE_PATH, &headers, br#"{"prompt":"hi"}"#);
            let answer = handle.block_on(send(world.provider().addr, raw));
            let answer = answer.ok_or_else(|| {
                TestCaseError::fail(format!("{name} {pointer} = {with}: connection closed"))
            })?;
            let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let has_error = json.as_ref().is_some_and(|j| j["error"].is_string());
            prop_assert!(
                (400..500).contains(&answer.status) && has_error,
                "{} {} = {}: HTTP {} {}",
                name,
                pointer,
                with,
                answer.status,
                preview(&answer.body)
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("live header fuzzing failed: {e}");
    }
    cases
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                collect_pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                collect_pointers(v, p, out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_malformed_request_gets_a_json_4xx_and_the_services_keep_serving() {
    bounded(600, async {
        let world = world().await;
        // A real open session, so malformed vouchers reach the session checks too.
        let agent = agent(&world).await;
        let (status, body) = paid_request(&world, &agent, "before the corpus").await;
        assert_eq!(status, 200, "{body}");
        let address = agent.sessions()[0].address;
        let live = Live {
            session: address.to_string(),
            opened_slot: x402pp_solana::escrow::fetch_session(&world.rpc, &address)
                .await
                .unwrap()
                .unwrap()
                .opened_slot,
            receipt_head: agent.receipts(&address)[0].receipt_id.to_string(),
        };

        let corpus = corpus(&world, &live);
        let mut failures = Vec::new();
        let mut by_category: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut by_status: std::collections::BTreeMap<u16, usize> = Default::default();
        let mut hyper_refusals = 0usize;
        let mut hyper_closed = 0usize;
        let mut json_4xx = 0usize;
        let mut free_200 = 0usize;
        let mut verdict_200 = 0usize;
        for case in &corpus.cases {
            *by_category.entry(case.category).or_default() += 1;
            let addr = match case.target {
                Target::Provider => world.provider().addr,
                Target::Facilitator => world.facilitator_addr(),
            };
            let answer = send(addr, case.raw.clone()).await;
            let verdict = match (&answer, case.allow) {
                (None, Allow::Hyper) => {
                    hyper_refusals += 1;
                    hyper_closed += 1;
                    Ok(())
                }
                (None, _) => Err("the connection closed without an answer".to_owned()),
                (Some(a), allow) => {
                    *by_status.entry(a.status).or_default() += 1;
                    let json: Option<Value> = serde_json::from_slice(&a.body).ok();
                    let error = json.as_ref().and_then(|j| j["error"].as_str());
                    match (a.status, allow) {
                        (500.., _) => Err(format!("HTTP {}", a.status)),
                        (400..=499, _) if error.is_some() => {
                            json_4xx += 1;
                            Ok(())
                        }
                        (400 | 431, Allow::Hyper) if a.body.is_empty() => {
                            hyper_refusals += 1;
                            Ok(())
                        }
                        (200, Allow::Free) => {
                            free_200 += 1;
                            Ok(())
                        }
                        (200, Allow::Verdict) => {
                            let j = json.unwrap_or(Value::Null);
                            if j["isValid"] == false || j["success"] == false {
                                verdict_200 += 1;
                                Ok(())
                            } else {
                                Err(format!("not a negative verdict: {j}"))
                            }
                        }
                        (status, _) => Err(format!("HTTP {status} with body {}", preview(&a.body))),
                    }
                }
            };
            if let Err(why) = verdict {
                failures.push(format!("[{}] {}: {why}", case.category, case.what));
            }
        }
        eprintln!(
            "malformed-request corpus: {} inputs: {json_4xx} answered 4xx + JSON error, \
             {verdict_200} facilitator requests that parse answered 200 with a negative verdict, \
             {free_200} free-route requests served 200, {hyper_refusals} refused by hyper itself \
             ({hyper_closed} of them by closing the connection); by category: {by_category:?}; \
             by status: {by_status:?}",
            corpus.cases.len(),
        );
        assert!(
            failures.is_empty(),
            "{} of {} malformed requests were mishandled:\n{}",
            failures.len(),
            corpus.cases.len(),
            failures.join("\n")
        );

        let fuzzed = fuzz_live_headers(&world, &live, LIVE_FUZZ_CASES);
        eprintln!(
            "live header fuzzing: {fuzzed} random hostile voucher/intent/payment headers, all \
             answered 4xx + JSON error; {} inputs in total",
            corpus.cases.len() + fuzzed as usize
        );

        // Both services still serve, and the session still pays.
        for addr in [world.provider().addr, world.facilitator_addr()] {
            let answer = send(addr, http("GET", "/health", &[], b"")).await.unwrap();
            assert_eq!(answer.status, 200, "{}", preview(&answer.body));
        }
        let (status, body) = paid_request(&world, &agent, "after the corpus").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(agent.sessions()[0].accepted, 2 * PRICE);
    })
    .await;
}

/// A correctly signed first voucher whose amount is written `"01000"` instead of `"1000"`: the
/// same number, but not its one canonical text form.
#[tokio::test]
async fn a_voucher_amount_with_a_leading_zero_gets_400_malformed_request_and_charges_nothing() {
    let world = world().await;
    let raw = world
        .open_session(INFERENCE_PATH, 10 * PRICE)
        .await
        .unwrap();
    let voucher = raw.voucher(1, PRICE, Hash32::ZERO);
    let mut json = serde_json::to_value(&voucher).unwrap();
    assert_eq!(json["cumulative"], PRICE.to_string());
    let send_voucher = |json: &Value| {
        reqwest::Client::new()
            .post(format!("{}{INFERENCE_PATH}", world.url()))
            .header(
                x402pp_protocol::headers::X402_SESSION_ID,
                raw.session.to_string(),
            )
            .header(
                x402pp_protocol::headers::X402_VOUCHER,
                STANDARD.encode(json.to_string()),
            )
            .header("content-type", "application/json")
            .body(json!({ "prompt": "zeros" }).to_string())
            .send()
    };
    for padded in [format!("0{PRICE}"), format!("000{PRICE}")] {
        json["cumulative"] = json!(padded);
        let response = send_voucher(&json).await.unwrap();
        assert_eq!(response.status(), 400, "{padded}");
        assert!(response
            .headers()
            .get(x402pp_protocol::headers::X402_RECEIPT)
            .is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "malformed_request", "{padded}: {body}");
    }
    // Nothing was accepted: the session has no voucher, and the canonical spelling of the
    // same signed voucher is still the session's first.
    let ledger = &world.provider().ledger;
    let before = ledger.session(&raw.session.to_bytes()).await.unwrap();
    assert!(
        before
            .as_ref()
            .is_none_or(|r| (r.last_seq, r.accepted) == (0, 0)),
        "{before:?}"
    );
    json["cumulative"] = json!(PRICE.to_string());
    let response = send_voucher(&json).await.unwrap();
    assert_eq!(response.status(), 200);
    let after = ledger
        .session(&raw.session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((after.last_seq, after.accepted), (1, PRICE));
}
