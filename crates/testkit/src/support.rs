//! What tests share beside the world: seeded randomness, child processes killed on drop, time
//! bounds, PostgreSQL schemas, and the agent store's voucher keys.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use solana_sdk::pubkey::Pubkey;
use sqlx::Connection as _;
use x402pp_protocol::{Hash32, Id16};

/// The environment variable whose value, when set, replays a seeded test.
pub const SEED_ENV: &str = "X402PP_CRASH_SEED";

/// SplitMix64: a seeded, dependency-free generator, so a failing run replays from its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64().checked_rem(bound).unwrap_or(0)
    }
}

/// The seed in `X402PP_CRASH_SEED`, else one from the clock.
pub fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            // The low 64 bits vary the most.
            #[allow(clippy::cast_possible_truncation)]
            let seed = nanos as u64;
            seed
        })
}

/// Runs `f`, panicking if it takes more than `secs` seconds.
pub async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    if tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .is_err()
    {
        panic!("the test took more than {secs} s");
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; a child process binds it next).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `GET url` until it answers 2xx, for at most `timeout`.
pub async fn wait_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now()
        .checked_add(timeout)
        .context("timeout too long")?;
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{url} did not answer within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process, killed (SIGKILL on Unix) and reaped when dropped, so a failing test leaves
/// no orphan.
#[derive(Debug)]
pub struct ChildProcess(pub Child);

impl ChildProcess {
    /// Spawns `command`.
    pub fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        Ok(Self(command.spawn().context("spawning a child process")?))
    }

    /// `kill -9` and reap.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh schema on the PostgreSQL of `X402PP_TEST_POSTGRES_URL`, dropped by
/// [`PgSchema::drop`].
#[derive(Debug)]
pub struct PgSchema {
    base: String,
    schema: String,
}

impl PgSchema {
    /// A schema named `<prefix>_<random>`; `None` (printing that the test was skipped) without
    /// `X402PP_TEST_POSTGRES_URL`.
    pub async fn create(prefix: &str) -> anyhow::Result<Option<Self>> {
        let Ok(base) = std::env::var("X402PP_TEST_POSTGRES_URL") else {
            println!("skipped: X402PP_TEST_POSTGRES_URL not set");
            return Ok(None);
        };
        let schema = format!("{prefix}_{}", Id16::random().to_string().to_lowercase());
        let mut conn = sqlx::PgConnection::connect(&base).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Some(Self { base, schema }))
    }

    /// A URL whose connections use the schema.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.base, self.schema
        )
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.base).await {
            if let Err(e) = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
                .execute(&mut conn)
                .await
            {
                println!("could not drop schema {}: {e}", self.schema);
            }
            let _ = conn.close().await;
        }
    }
}

/// The voucher key of `session` from an agent's store directory (`<session>.json`,
/// `voucherSecret`): how a test forges what a crashed agent would resend.
pub fn stored_voucher_key(
    store: &Path,
    session: &Pubkey,
) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(store.join(format!("{session}.json")))?;
    let record: serde_json::Value = serde_json::from_str(&text)?;
    let secret: Hash32 = serde_json::from_value(
        record
            .get("voucherSecret")
            .cloned()
            .context("no voucherSecret in the stored session")?,
    )?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&secret.0))
}

/// What a middleman in a test gets back from the provider: status, headers (without the
/// hop-by-hop length and encoding) and body.
pub type Forwarded = (
    axum::http::StatusCode,
    axum::http::HeaderMap,
    axum::body::Bytes,
);

/// Sends a request a test proxy received on to `upstream` (its headers but `host` and
/// `content-length`) and returns the answer, for the proxy to pass on or tamper with.
pub async fn forward(
    upstream: &str,
    method: axum::http::Method,
    uri: &axum::http::Uri,
    request_headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> anyhow::Result<Forwarded> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{upstream}{uri}"))
        .body(body);
    for (name, value) in request_headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.context("forwarding to the provider")?;
    let status = response.status();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in response.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let body = response.bytes().await.context("the provider's body")?;
    Ok((status, headers, body))
}
