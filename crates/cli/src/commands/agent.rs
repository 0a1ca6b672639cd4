//! `x402pp agent get|post URL` and `x402pp session list|show|top-up|close|reclaim|dispute`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use solana_sdk::pubkey::Pubkey;
use x402pp_client::{Agent, AgentConfig, Budget, DisputePolicy};

/// What every agent command needs: the wallet, the cluster, the budget and the local store.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Solana JSON-RPC endpoint.
    #[arg(long, env = "X402PP_RPC_URL", default_value = "http://127.0.0.1:8899")]
    pub rpc_url: String,
    /// Agent keypair file (Solana CLI JSON).
    #[arg(long, env = "X402PP_AGENT_KEYPAIR")]
    pub keypair: PathBuf,
    /// Directory of the agent's receipt and session store.
    #[arg(long, env = "X402PP_AGENT_STORE", default_value = ".x402pp-agent")]
    pub store: PathBuf,
    /// Most the agent pays per request (atomic units).
    #[arg(long, default_value_t = 10_000)]
    pub max_price: u64,
    /// Most the agent locks in one session (atomic units).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_deposit: u64,
    /// Slowest promised latency accepted (ms).
    #[arg(long, default_value_t = 5_000)]
    pub max_latency_ms: u32,
    /// Pay with the exact scheme only.
    #[arg(long)]
    pub exact: bool,
    /// Dispute SLA breaches on chain as soon as they happen.
    #[arg(long)]
    pub auto_dispute: bool,
    /// Priority fee of the agent's transactions, micro-lamports per compute unit (each
    /// transaction asks for the compute units it uses).
    #[arg(long, env = "X402PP_COMPUTE_UNIT_PRICE", default_value_t = x402pp_solana::compute::DEFAULT_UNIT_PRICE)]
    pub compute_unit_price: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl AgentArgs {
    async fn agent(&self) -> anyhow::Result<Agent> {
        let keypair = Arc::new(x402pp_solana::keys::read_keypair(&self.keypair)?);
        let budget = Budget {
            max_price_per_request: self.max_price,
            max_deposit: self.max_deposit,
            max_latency_ms: self.max_latency_ms,
            min_uptime_bps: 0,
        };
        let mut config = AgentConfig::new(self.rpc_url.clone(), keypair, budget);
        config.store_path = Some(self.store.clone());
        config.prefer_session = !self.exact;
        config.compute_unit_price = self.compute_unit_price;
        config.dispute_policy = if self.auto_dispute {
            DisputePolicy::Automatic
        } else {
            DisputePolicy::Manual
        };
        Agent::new(config).await.context("starting the agent")
    }
}

/// `x402pp agent ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// GET a paid URL.
    Get {
        /// The URL.
        url: String,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// POST to a paid URL.
    Post {
        /// The URL.
        url: String,
        /// The request body (JSON is sent with content-type application/json).
        #[arg(long, short, default_value = "")]
        data: String,
        #[command(flatten)]
        args: AgentArgs,
    },
}

/// Runs an agent command: prints the response body (and the receipt summary on stderr).
pub async fn run_agent(command: AgentCommand) -> anyhow::Result<()> {
    let (method, url, body, args) = match command {
        AgentCommand::Get { url, args } => (reqwest::Method::GET, url, String::new(), args),
        AgentCommand::Post { url, data, args } => (reqwest::Method::POST, url, data, args),
    };
    let agent = args.agent().await?;
    let http = reqwest::Client::new();
    let mut request = http.request(method, &url);
    if !body.is_empty() {
        if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        request = request.body(body);
    }
    let request = request
        .build()
        .with_context(|| format!("invalid request to {url}"))?;
    let response = agent.send(request).await?;
    let status = response.status();
    let text = response.text().await.context("reading the response")?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "status": status.as_u16(), "body": text, "stats": stats_json(&agent) })
        );
    } else {
        println!("{text}");
        let stats = agent.stats();
        eprintln!(
            "[{status}; receipts verified {}; session requests {}; exact requests {}; on-chain transactions {}]",
            stats.receipts_verified, stats.session_requests, stats.exact_requests, stats.transactions
        );
    }
    if !status.is_success() {
        bail!("the provider answered {status}");
    }
    Ok(())
}

fn stats_json(agent: &Agent) -> serde_json::Value {
    let s = agent.stats();
    serde_json::json!({
        "requests": s.requests,
        "sessionRequests": s.session_requests,
        "exactRequests": s.exact_requests,
        "receiptsVerified": s.receipts_verified,
        "slaBreaches": s.sla_breaches,
        "disputes": s.disputes,
        "penaltiesRefunded": s.penalties_refunded,
        "transactions": s.transactions,
        "feesLamports": s.fees_lamports,
    })
}

/// `x402pp session ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SessionCommand {
    /// List the agent's sessions.
    List {
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Show one session and its receipts.
    Show {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Add to a session's deposit.
    TopUp {
        /// Session address.
        session: Pubkey,
        /// Amount in atomic units.
        amount: u64,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Ask to close a session (the provider may claim during the grace period).
    Close {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Take the remainder back after expiry (or close request) plus grace.
    Reclaim {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Dispute every SLA breach receipt not yet disputed.
    Dispute {
        #[command(flatten)]
        args: AgentArgs,
    },
}

/// Runs a session command.
pub async fn run_session(command: SessionCommand) -> anyhow::Result<()> {
    match command {
        SessionCommand::List { args } => {
            let agent = args.agent().await?;
            let sessions = agent.sessions();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &sessions
                            .iter()
                            .map(|s| format!("{s:?}"))
                            .collect::<Vec<_>>()
                    )?
                );
            } else if sessions.is_empty() {
                println!("no sessions");
            } else {
                for session in sessions {
                    println!("{session:?}");
                }
            }
        }
        SessionCommand::Show { session, args } => {
            let agent = args.agent().await?;
            let Some(info) = agent.sessions().into_iter().find(|s| s.address == session) else {
                bail!("no session {session} in the store {}", args.store.display());
            };
            let receipts = agent.receipts(&session);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "session": format!("{info:?}"), "receipts": receipts })
                );
            } else {
                println!("{info:?}");
                for receipt in receipts {
                    println!(
                        "  #{:<5} {:>10} charged, {:>12} total, {:>6} ms, {:?}",
                        receipt.body.request_number,
                        receipt.body.amount_charged,
                        receipt.body.cumulative_charged,
                        receipt.body.latency_ms,
                        receipt.body.status
                    );
                }
            }
        }
        SessionCommand::TopUp {
            session,
            amount,
            args,
        } => {
            let signature = args.agent().await?.top_up(&session, amount).await?;
            println!("topped up {session} by {amount}: {signature}");
        }
        SessionCommand::Close { session, args } => {
            let signature = args.agent().await?.request_close(&session).await?;
            println!("close requested for {session}: {signature}");
        }
        SessionCommand::Reclaim { session, args } => {
            let signature = args.agent().await?.reclaim(&session).await?;
            println!("reclaimed {session}: {signature}");
        }
        SessionCommand::Dispute { args } => {
            let outcomes = args.agent().await?.dispute_breaches().await?;
            if outcomes.is_empty() {
                println!("no breach to dispute");
            }
            for outcome in outcomes {
                println!(
                    "disputed {} seq {}: paid {} ({})",
                    outcome.session, outcome.seq, outcome.paid, outcome.signature
                );
            }
        }
    }
    Ok(())
}
