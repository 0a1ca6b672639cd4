//! The tower [`Layer`] that puts paid routes behind x402++: wrap an axum `Router` with
//! `.layer(PaymentLayer::new(provider))`. Routes the provider does not price pass through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use crate::provider::Provider;

/// Layer adding x402++ payment to the routes the provider prices.
#[derive(Debug, Clone)]
pub struct PaymentLayer {
    provider: Arc<Provider>,
}

impl PaymentLayer {
    /// A layer for `provider`.
    pub fn new(provider: Arc<Provider>) -> Self {
        Self { provider }
    }
}

impl<S> Layer<S> for PaymentLayer {
    type Service = PaymentService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PaymentService {
            inner,
            provider: self.provider.clone(),
        }
    }
}

/// The service [`PaymentLayer`] produces. Always answers (`Error = Infallible`).
#[derive(Debug, Clone)]
pub struct PaymentService<S> {
    inner: S,
    provider: Arc<Provider>,
}

impl<S> Service<Request<Body>> for PaymentService<S>
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
        let provider = self.provider.clone();
        let path = request.uri().path().to_owned();
        if provider.route(&path).is_none() {
            return Box::pin(inner.oneshot(request));
        }
        Box::pin(async move {
            let response = provider
                .handle(&path, request, |request| async move {
                    match inner.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                })
                .await;
            Ok(response)
        })
    }
}
