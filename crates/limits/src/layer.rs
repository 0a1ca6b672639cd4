//! [`RequestLimitsLayer`]: the header, body, read-timeout and per-IP limits of a
//! [`RequestLimits`] in front of every route of a router.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response};
use axum::response::IntoResponse;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tower::{Layer, Service, ServiceExt};
use x402pp_protocol::ErrorCode;

use crate::{LimitError, RateLimit, RateLimiter};

/// Whether an error (or one of its sources) is a body length limit being exceeded.
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The bytes of a request's header fields: names plus values, as counted against
/// [`RequestLimits::max_header_bytes`].
pub fn header_bytes(request_headers: &HeaderMap) -> usize {
    request_headers.iter().fold(0usize, |total, (name, value)| {
        total
            .saturating_add(name.as_str().len())
            .saturating_add(value.len())
    })
}

/// Limits every request of a router gets from [`RequestLimitsLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest total of header names and values (default 32 KiB); over it, `431`.
    pub max_header_bytes: usize,
    /// Largest request body on any route (default 1 MiB); over it, `413`. Paid routes are also
    /// bounded by `ServerConfig::max_request_body`.
    pub max_body_bytes: usize,
    /// Time to receive the body once the headers are in (default 30 s); over it, `408`. The
    /// handler's own time is not limited here (paid routes have `handler_timeout`).
    pub read_timeout: Duration,
    /// Per-client-IP rate (default none: behind a proxy every client has the proxy's address).
    pub per_ip: Option<RateLimit>,
    /// Keys (IPs, sessions) a rate limiter tracks at most (default 65 536).
    pub max_tracked_keys: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024,
            read_timeout: Duration::from_secs(30),
            per_ip: None,
            max_tracked_keys: 65_536,
        }
    }
}

/// A tower layer applying [`RequestLimits`] to every request.
#[derive(Debug, Clone)]
pub struct RequestLimitsLayer {
    limits: Arc<RequestLimits>,
    per_ip: Option<Arc<RateLimiter<IpAddr>>>,
}

impl RequestLimitsLayer {
    /// A layer with `limits` (one per-IP limiter shared by all services it makes).
    pub fn new(limits: RequestLimits) -> Self {
        let per_ip = limits
            .per_ip
            .map(|rate| Arc::new(RateLimiter::new(rate, limits.max_tracked_keys)));
        Self {
            limits: Arc::new(limits),
            per_ip,
        }
    }

    /// The per-IP limiter, when there is one.
    pub fn per_ip(&self) -> Option<&Arc<RateLimiter<IpAddr>>> {
        self.per_ip.as_ref()
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimitsService {
            inner,
            limits: self.limits.clone(),
            per_ip: self.per_ip.clone(),
        }
    }
}

/// The service [`RequestLimitsLayer`] produces. Always answers (`Error = Infallible`).
#[derive(Debug, Clone)]
pub struct RequestLimitsService<S> {
    inner: S,
    limits: Arc<RequestLimits>,
    per_ip: Option<Arc<RateLimiter<IpAddr>>>,
}

impl<S> RequestLimitsService<S> {
    /// The refusal a request gets before its body is read, if any.
    fn refuse_early(&self, request: &Request<Body>) -> Option<LimitError> {
        let limits = &self.limits;
        let size = header_bytes(request.headers());
        if size > limits.max_header_bytes {
            return Some(LimitError::new(
                ErrorCode::HeaderTooLarge,
                format!(
                    "the request headers are {size} bytes, the limit is {}",
                    limits.max_header_bytes
                ),
            ));
        }
        if let (Some(limiter), Some(ConnectInfo(peer))) = (
            &self.per_ip,
            request.extensions().get::<ConnectInfo<SocketAddr>>(),
        ) {
            if let Err(limited) = limiter.check(peer.ip()) {
                return Some(limited.into_limit_error("from this address"));
            }
        }
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared
            .is_some_and(|len| len > u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX))
        {
            return Some(too_large(limits.max_body_bytes));
        }
        None
    }
}

fn too_large(limit: usize) -> LimitError {
    LimitError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// Reads the whole body within the limits.
async fn read_body(body: Body, limits: &RequestLimits) -> Result<Body, LimitError> {
    let collected = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    match collected {
        Ok(Ok(collected)) => Ok(Body::from(collected.to_bytes())),
        Ok(Err(error)) if is_length_limit(error.as_ref()) => Err(too_large(limits.max_body_bytes)),
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body could not be read");
            Err(LimitError::new(
                ErrorCode::MalformedRequest,
                "the request body could not be read",
            ))
        }
        Err(_) => Err(LimitError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body was not received within {} ms",
                limits.read_timeout.as_millis()
            ),
        )),
    }
}

impl<S> Service<Request<Body>> for RequestLimitsService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        if let Some(error) = self.refuse_early(&request) {
            return Box::pin(async move { Ok(error.into_response()) });
        }
        let limits = self.limits.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            match read_body(body, &limits).await {
                Ok(body) => inner.oneshot(Request::from_parts(parts, body)).await,
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_count_names_and_values() {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("x-a", "12345".parse().expect("hv"));
        request_headers.append("x-a", "678".parse().expect("hv"));
        assert_eq!(header_bytes(&request_headers), 3 + 5 + 3 + 3);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_length_limit_error() {
        let error = axum::body::to_bytes(Body::from(vec![0u8; 10]), 4)
            .await
            .expect_err("over the limit");
        assert!(is_length_limit(&error));
        let other = std::io::Error::other("not a limit");
        assert!(!is_length_limit(&other));
    }
}
