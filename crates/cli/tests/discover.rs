//! `x402pp discover` against a stub facilitator: the catalog as a table and as JSON, the query it
//! sends, and clear errors with a non-zero exit for a refusal, a non-catalog answer and bad
//! flags.
#![allow(clippy::unwrap_used)] // tests

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;

use assert_cmd::Command;
use serde_json::{json, Value};
use x402pp_protocol::bazaar::{DiscoveryDeclaration, DiscoveryResourcesResponse};

fn x402pp() -> Command {
    Command::cargo_bin("x402pp").unwrap()
}

/// A one-request HTTP server answering `status` and `body`; yields the request line it got.
fn stub(status: u16, body: String) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&request);
        tx.send(text.lines().next().unwrap_or("").to_owned())
            .unwrap();
        let answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).unwrap();
    });
    (url, rx)
}

fn catalog() -> Value {
    let bazaar = DiscoveryDeclaration::post_json(json!({"prompt": "hi"}), json!({}))
        .with_output(json!({"completion": "x"}), None)
        .extensions();
    json!({
        "x402Version": 2,
        "items": [{
            "resource": "https://api.example/v1/inference",
            "type": "http",
            "x402Version": 2,
            "accepts": [{
                "scheme": "exact",
                "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
                "amount": "1000",
                "asset": "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
                "payTo": "11111111111111111111111111111111",
                "maxTimeoutSeconds": 60
            }],
            "lastUpdated": "2026-01-01T00:00:00.000Z",
            "description": "toy text inference",
            "extensions": bazaar,
        }],
        "pagination": {"limit": 1, "offset": 0, "total": 3}
    })
}

#[test]
fn discover_prints_what_is_for_sale_as_a_table_and_asks_for_http_resources() {
    let (url, request) = stub(200, catalog().to_string());
    let output = x402pp()
        .args(["discover", &format!("{url}/"), "--limit", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        request.recv().unwrap(),
        "GET /discovery/resources?type=http&limit=1&offset=0 HTTP/1.1"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("METHOD  RESOURCE"), "{stdout}");
    for cell in [
        "POST",
        "https://api.example/v1/inference",
        "1000",
        "exact",
        "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "toy text inference",
    ] {
        assert!(lines[1].contains(cell), "{cell} missing: {stdout}");
    }
    assert_eq!(
        lines[2],
        "1 of 3 resources (offset 0); next page: --offset 1"
    );
}

#[test]
fn discover_json_prints_the_facilitators_answer() {
    let (url, _request) = stub(200, catalog().to_string());
    let output = x402pp()
        .args(["discover", &url, "--json", "--type", "http"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: DiscoveryResourcesResponse = serde_json::from_slice(&output.stdout).unwrap();
    let expected: DiscoveryResourcesResponse = serde_json::from_value(catalog()).unwrap();
    assert_eq!(printed, expected);
}

#[test]
fn discover_fails_with_the_facilitators_reason_or_a_clear_error() {
    let (url, _request) = stub(
        400,
        json!({"error": "malformed_request", "message": "bad discovery query: limit"}).to_string(),
    );
    let output = x402pp().args(["discover", &url]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("answered 400")
            && stderr.contains("malformed_request: bad discovery query"),
        "{stderr}"
    );

    let (url, _request) = stub(200, json!({"kinds": []}).to_string());
    let output = x402pp().args(["discover", &url]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not an x402 discovery list"), "{stderr}");

    let output = x402pp().args(["discover", "ftp://x"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("must start with http"));

    let output = x402pp()
        .args(["discover", "http://127.0.0.1:1", "--limit", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
}
