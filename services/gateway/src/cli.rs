//! The command line of `x402pp gateway`: the provider's flags (keys, RPC, ledger, facilitator,
//! limits, and the metered price: `--base-price`, `--price-in`, `--price-out`, `--unit-size`,
//! `--max-per-request`) plus the upstream's, and [`run`].

use std::time::Duration;

use crate::{GatewayOptions, GatewayPricing};

/// Sell an OpenAI-compatible inference server per token (docs/gateway.md).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "gateway")]
#[command(mut_arg("listen", |arg| arg.default_value("127.0.0.1:8402")))]
pub struct Args {
    /// The provider's flags.
    #[command(flatten)]
    pub provider: x402pp_provider::cli::Args,
    /// The upstream's base URL, e.g. http://127.0.0.1:8080 (`/v1/...` is appended).
    #[arg(long, env = "X402PP_UPSTREAM")]
    pub upstream: String,
    /// Sent to the upstream as `Authorization: Bearer`; the client's own is never forwarded.
    #[arg(long, env = "X402PP_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// Replace the `model` of every request with this name.
    #[arg(long)]
    pub model: Option<String>,
    /// Seconds to connect to the upstream.
    #[arg(long, default_value_t = 5)]
    pub upstream_connect_timeout_secs: u64,
    /// Seconds for the upstream's response headers (`504 upstream_timeout` after).
    #[arg(long, default_value_t = 60)]
    pub upstream_first_byte_timeout_secs: u64,
    /// Longest silence between two reads of an upstream body, in seconds.
    #[arg(long, default_value_t = 60)]
    pub upstream_read_timeout_secs: u64,
}

impl Args {
    /// The gateway options the flags describe.
    pub fn options(&self) -> GatewayOptions {
        let route = self.provider.chat_route();
        let pricing = GatewayPricing {
            base: route.price_per_request,
            metering: route.metering.unwrap_or(x402pp_protocol::Metering {
                unit_price_in: self.provider.price_in,
                unit_price_out: self.provider.price_out,
                unit_size: self.provider.unit_size,
                max_per_request: self.provider.max_per_request,
                unit_kind: x402pp_protocol::UnitKind::Tokens,
            }),
        };
        let mut options = GatewayOptions::new(self.upstream.clone(), pricing);
        options.upstream_api_key = self.upstream_api_key.clone();
        options.model = self.model.clone();
        options.connect_timeout = Duration::from_secs(self.upstream_connect_timeout_secs);
        options.first_byte_timeout = Duration::from_secs(self.upstream_first_byte_timeout_secs);
        options.read_timeout = Duration::from_secs(self.upstream_read_timeout_secs);
        options.max_request_bytes = self.provider.max_body_bytes;
        options
    }
}

/// Runs the gateway until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let provider_args = &args.provider;
    x402pp_provider::cli::init_tracing(provider_args.log_json);
    let options = args.options();
    let min_deposit = options.pricing.route_price().min_deposit;
    let started = x402pp_provider::cli::start(
        provider_args,
        |mut config| {
            // The handler waits for the upstream's first byte: the layer's handler timeout must
            // not cut that wait short (a 504 charged 0 to a slow model).
            config.handler_timeout = config.handler_timeout.max(options.first_byte_timeout);
            options.configure(config, |_, route| {
                route.sla.max_latency_ms = provider_args.max_latency_ms;
                route.sla.max_input_bytes = provider_args.max_input_bytes;
                route.max_in_flight = provider_args.max_in_flight;
                route.exact = !provider_args.no_exact;
            })
        },
        min_deposit,
    )
    .await?;
    let app = crate::app(started.provider.clone(), options)?;
    x402pp_provider::cli::serve(started, app, provider_args.listen, "gateway").await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mint = solana_sdk::pubkey::Pubkey::new_unique().to_string();
        let mut argv = vec!["x402pp-gateway", "--keypair", "id.json", "--mint", &mint];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn the_flags_describe_the_upstream_and_the_metered_price() {
        assert!(parse(&[]).is_err(), "--upstream is required");
        let args = parse(&[
            "--upstream",
            "http://127.0.0.1:8080",
            "--upstream-api-key",
            "k",
            "--model",
            "llama3.2",
            "--base-price",
            "10",
            "--price-out",
            "3000",
            "--max-per-request",
            "2000",
            "--upstream-first-byte-timeout-secs",
            "7",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args.provider.listen.to_string(), "127.0.0.1:8402");
        let options = args.options();
        assert_eq!(options.upstream, "http://127.0.0.1:8080");
        assert_eq!(options.upstream_api_key.as_deref(), Some("k"));
        assert_eq!(options.model.as_deref(), Some("llama3.2"));
        assert_eq!(options.pricing.base, 10);
        assert_eq!(options.pricing.metering.unit_price_out, 3_000);
        assert_eq!(options.pricing.metering.max_per_request, 2_000);
        assert_eq!(options.first_byte_timeout, Duration::from_secs(7));
        let listen = parse(&["--upstream", "http://u", "--listen", "0.0.0.0:9000"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listen.provider.listen.to_string(), "0.0.0.0:9000");
    }
}
