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
        if !status.is_success() {
            return Err(FacilitatorError::Unavailable(format!(
                "{path} answered HTTP {status}"
            )));
        }
        response
            .json()
            .await
            .map_err(|e| FacilitatorError::Unavailable(format!("{path}: {e}")))
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
