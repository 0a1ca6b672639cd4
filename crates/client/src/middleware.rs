//! The reqwest-middleware integration: [`PaymentMiddleware`] pays every request through an
//! [`Agent`].

use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::agent::Transport;
use crate::{Agent, RequestOptions};

/// A middleware that pays 402 challenges with the agent's sessions (or `exact`). A request's
/// [`RequestOptions`] extension (`with_extension`) applies to it.
///
/// The request goes on through the rest of the middleware chain (`next`), once per attempt:
/// the unpaid try, then the paid retry.
#[derive(Clone)]
pub struct PaymentMiddleware {
    agent: Agent,
}

impl PaymentMiddleware {
    /// A middleware paying with `agent`.
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }
}

#[async_trait::async_trait]
impl Middleware for PaymentMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let options = extensions
            .get::<RequestOptions>()
            .copied()
            .unwrap_or_default();
        let mut transport = Transport::Next { next, extensions };
        self.agent
            .send_with(request, &mut transport, options)
            .await
            .map_err(reqwest_middleware::Error::middleware)
    }
}
