//! Verifying and settling `exact` payments: in-process (the solana crate's facilitator) or
//! remote (any x402 v2 facilitator over HTTP), behind one trait.

use std::sync::Arc;
use std::time::Duration;

use x402pp_protocol::x402::{
    FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse,
};
use x402pp_solana::exact::facilitator::ExactFacilitator;

/// Why a facilitator could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum FacilitatorError {
    /// Transport failure or non-JSON answer; the outcome of a settle is unknown.
    #[error("facilitator unavailable: {0}")]
    Unavailable(String),
}

/// The x402 facilitator API.
#[async_trait::async_trait]
pub trait Facilitator: Send + Sync {
    /// `POST /verify`.
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError>;
    /// `POST /settle`.
    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError>;
    /// `GET /supported`.
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError>;
}

#[async_trait::async_trait]
impl Facilitator for ExactFacilitator {
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        Ok(ExactFacilitator::verify(self, request).await)
    }

    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        Ok(ExactFacilitator::settle(self, request).await)
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(ExactFacilitator::supported(self))
    }
}

/// A remote facilitator at `base_url` (e.g. `http://127.0.0.1:4020`).
#[derive(Debug, Clone)]
pub struct HttpFacilitator {
    base_url: String,
    http: reqwest::Client,
}

impl HttpFacilitator {
    /// A client for the facilitator at `base_url`, with a 60 s request timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&FacilitatorRequest>,
    ) -> Result<T, FacilitatorError> {
        let url = format!("{}{path}", self.base_url);
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let response = request
            .send()
            .await
            .map_err(|e| FacilitatorError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| FacilitatorError::Unavailable(format!("{path}: {e}")))?;
        // Facilitators answer a payment they refuse with a 4xx whose body is still the verdict
        // (`isValid: false` and a reason): that is the client's fault, not an outage, and the
        // provider answers it with a 402. Rate limits, 5xx and bodies that are no verdict are.
        let verdict = status.is_success()
            || (status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS);
        match serde_json::from_slice(&body) {
            Ok(answer) if verdict => Ok(answer),
            Ok(_) => Err(FacilitatorError::Unavailable(format!(
                "{path} answered HTTP {status}"
            ))),
            Err(e) => Err(FacilitatorError::Unavailable(format!(
                "{path} answered HTTP {status} without a verdict: {e}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Facilitator for HttpFacilitator {
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        self.call("/verify", Some(request)).await
    }

    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        self.call("/settle", Some(request)).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.call("/supported", None).await
    }
}

/// A shared facilitator.
pub type SharedFacilitator = Arc<dyn Facilitator>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use x402pp_protocol::x402::{FacilitatorRequest, VerifyResponse};

    use super::{Facilitator, FacilitatorError, HttpFacilitator};

    /// A facilitator whose `/verify` answers `status` with `body`.
    async fn answering(status: StatusCode, body: &'static str) -> HttpFacilitator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/verify", post(move || async move { (status, body) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpFacilitator::new(url)
    }

    fn request() -> FacilitatorRequest {
        serde_json::from_value(serde_json::json!({
            "x402Version": 2,
            "paymentPayload": {
                "x402Version": 2,
                "accepted": {
                    "scheme": "exact", "network": "solana:devnet", "amount": "1",
                    "asset": "x", "payTo": "y", "maxTimeoutSeconds": 60
                },
                "payload": {}
            },
            "paymentRequirements": {
                "scheme": "exact", "network": "solana:devnet", "amount": "1",
                "asset": "x", "payTo": "y", "maxTimeoutSeconds": 60
            }
        }))
        .unwrap()
    }

    const REFUSED: &str =
        r#"{"isValid":false,"invalidReason":"invalid_exact_svm_payload_transaction","payer":"p"}"#;

    #[tokio::test]
    async fn a_refusal_sent_with_a_4xx_is_a_verdict_not_an_outage() {
        let facilitator = answering(StatusCode::BAD_REQUEST, REFUSED).await;
        let verdict: VerifyResponse = facilitator.verify(&request()).await.unwrap();
        assert!(!verdict.is_valid);
        assert_eq!(
            verdict.invalid_reason.as_deref(),
            Some("invalid_exact_svm_payload_transaction")
        );
    }

    #[tokio::test]
    async fn rate_limits_server_errors_and_bodies_without_a_verdict_are_outages() {
        for (status, body) in [
            (StatusCode::TOO_MANY_REQUESTS, REFUSED),
            (StatusCode::INTERNAL_SERVER_ERROR, REFUSED),
            (StatusCode::BAD_REQUEST, "not json"),
            (StatusCode::OK, "{}"),
        ] {
            let facilitator = answering(status, body).await;
            let outcome = facilitator.verify(&request()).await;
            assert!(
                matches!(outcome, Err(FacilitatorError::Unavailable(_))),
                "{status} {body}: {outcome:?}"
            );
        }
    }
}
