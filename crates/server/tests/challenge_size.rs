//! A route whose `PAYMENT-REQUIRED` would not fit in what clients decode (8 KiB per header) is
//! refused when the provider starts, with a message that says which route and what to shorten,
//! instead of being served to clients that cannot read its challenge.
#![allow(clippy::unwrap_used)] // tests

use x402pp_protocol::headers;
use x402pp_testkit::{test_route, World};

#[tokio::test]
async fn a_route_whose_challenge_would_not_fit_in_a_header_is_refused_at_start() {
    let mut route = test_route(1_000);
    route.description = "x".repeat(headers::MAX_HEADER_LEN);
    let error = World::builder()
        .route("/wordy", route)
        .start()
        .await
        .err()
        .expect("the provider refuses the route");
    let message = format!("{error:#}");
    assert!(
        message.contains("route /wordy: its PAYMENT-REQUIRED header would be"),
        "{message}"
    );

    // A route of ordinary size starts, and its challenge fits.
    let w = World::builder()
        .route("/plain", test_route(1_000))
        .start()
        .await
        .unwrap();
    let response = w
        .http
        .post(format!("{}/plain", w.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert!(response.headers()[headers::PAYMENT_REQUIRED].len() <= headers::MAX_HEADER_LEN);
}
