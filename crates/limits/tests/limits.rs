//! The request limits layer on its own (no chain): too many header bytes get `431`, a body over
//! the limit `413` before the handler runs, a body that does not arrive `408`, a flood from one
//! IP `429` with `Retry-After` — all as the JSON error body — and without `ConnectInfo` the
//! per-IP limit is skipped rather than panicking.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use x402pp_limits::{RateLimit, RequestLimits, RequestLimitsLayer};
use x402pp_protocol::{ErrorBody, ErrorCode};

fn app(limits: RequestLimits, hits: Arc<AtomicUsize>) -> Router {
    let posted = hits.clone();
    Router::new()
        .route("/free", get(|| async { "free" }))
        .route(
            "/echo",
            post(move |body: String| {
                let posted = posted.clone();
                async move {
                    posted.fetch_add(1, Ordering::SeqCst);
                    body
                }
            }),
        )
        .layer(RequestLimitsLayer::new(limits))
}

async fn error_of(response: axum::response::Response) -> (StatusCode, ErrorCode) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{status} is JSON"
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    (status, body.error)
}

#[tokio::test]
async fn headers_over_the_total_limit_get_431_json_though_each_is_small() {
    let hits = Arc::new(AtomicUsize::new(0));
    let limits = RequestLimits {
        max_header_bytes: 4 * 1024,
        ..RequestLimits::default()
    };
    let app = app(limits, hits);
    let mut request = Request::get("/free");
    for i in 0..8 {
        request = request.header(format!("x-filler-{i}"), "a".repeat(1_000));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeaderTooLarge
        )
    );
    // Under the limit it is served.
    let response = app
        .oneshot(
            Request::get("/free")
                .header("x-filler", "a".repeat(3_000))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_json_before_the_handler_runs() {
    let hits = Arc::new(AtomicUsize::new(0));
    let limits = RequestLimits {
        max_body_bytes: 1_000,
        ..RequestLimits::default()
    };
    let app = app(limits, hits.clone());
    // Declared by Content-Length: refused before reading.
    let response = app
        .clone()
        .oneshot(
            Request::post("/echo")
                .header("content-length", "5000")
                .body(Body::from("x".repeat(5_000)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
    );
    // Streamed without a length: refused once the limit is crossed.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..10).map(|_| Ok("y".repeat(500))).collect();
    let response = app
        .clone()
        .oneshot(
            Request::post("/echo")
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the handler never ran");
    // At the limit it is served.
    let response = app
        .oneshot(
            Request::post("/echo")
                .body(Body::from("z".repeat(1_000)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_json() {
    let hits = Arc::new(AtomicUsize::new(0));
    let limits = RequestLimits {
        read_timeout: Duration::from_millis(200),
        ..RequestLimits::default()
    };
    let app = app(limits, hits.clone());
    let never = futures_util::stream::pending::<Result<String, std::io::Error>>();
    let started = std::time::Instant::now();
    let response = app
        .oneshot(
            Request::post("/echo")
                .body(Body::from_stream(never))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_client_over_real_tcp_gets_408_json() {
    let limits = RequestLimits {
        read_timeout: Duration::from_millis(200),
        ..RequestLimits::default()
    };
    let app = app(limits, Arc::new(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Headers promise 100 bytes; 10 come, then nothing.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn flood_from_one_ip_gets_429_with_retry_after_and_other_ips_are_not_affected() {
    let limits = RequestLimits {
        per_ip: RateLimit::per_second(1, 5),
        ..RequestLimits::default()
    };
    let app = app(limits, Arc::new(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            served.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..8 {
        let response = http
            .get(format!("http://{addr}/free"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let limited = limited.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after));
    let body: ErrorBody = limited.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::RateLimited);

    // The limiter is per address: another peer (ConnectInfo set as axum would) is served.
    let other: SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let mut request = Request::get("/free").body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(other));
    assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn without_connect_info_the_per_ip_limit_is_skipped_without_a_panic() {
    let limits = RequestLimits {
        per_ip: RateLimit::per_second(1, 1),
        ..RequestLimits::default()
    };
    let app = app(limits, Arc::new(AtomicUsize::new(0)));
    for _ in 0..20 {
        let response = app
            .clone()
            .oneshot(Request::get("/free").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn headers_beyond_hypers_own_buffer_are_refused_by_hyper_before_the_layer() {
    // hyper refuses a header section over its read buffer (about 400 KiB) or with more than 100
    // fields with a bare `431` (no JSON body) and closes the connection: the layer never sees it.
    let app = app(RequestLimits::default(), Arc::new(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"GET /free HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..101 {
        request.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
