//! The local session and receipt store.
//!
//! A directory with two files per session, named by the session address:
//!
//! - `<address>.json` — the session record ([`StoredSession`]): terms (the signed offer), keys,
//!   the voucher key's secret, counters, breaches and disputes. Rewritten atomically (write to
//!   `.tmp`, then rename) after every change. Mode 0600 on Unix: it holds the voucher key.
//! - `<address>.receipts.jsonl` — the verified receipts, one wire-format JSON per line, in seq
//!   order, appended as they arrive.
//!
//! Without a directory the store keeps nothing (the agent's memory is the only copy).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use x402pp_protocol::{Hash32, Offer, Pubkey, Receipt, Voucher};

use crate::error::StoreError;
use crate::types::AgentSessionState;
use crate::ClientError;

/// A breach receipt and, once disputed, the dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BreachRecord {
    /// The receipt's seq.
    pub seq: u64,
    /// The dispute transaction (base58), once disputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute_signature: Option<String>,
    /// What the dispute paid back.
    #[serde(default)]
    pub paid: u64,
    /// Whether a dispute was recorded on chain.
    #[serde(default)]
    pub disputed: bool,
}

/// A streamed answer whose receipt did not arrive (the agent stopped reading, the connection
/// broke, or the stream ended without its receipt event): what fetching and checking its receipt
/// takes (`docs/design/metered-streaming.md` §3.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PendingReceipt {
    /// The voucher that paid the request: resent (same method and URL, empty body) to fetch the
    /// receipt from `409 voucher_conflict`.
    pub voucher: Voucher,
    /// The request's method.
    pub method: String,
    /// The request's URL.
    pub url: String,
    /// sha256(method ‖ path+query ‖ body) of the request.
    pub input_hash: Hash32,
    /// Its body's length.
    pub input_bytes: u64,
    /// The answer's HTTP status.
    pub http_status: u16,
    /// Bytes of the handler's answer read before the cut.
    pub bytes_read: u64,
    /// Their sha256.
    pub read_hash: Hash32,
}

/// Everything the agent keeps about one session (the JSON of `<address>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredSession {
    /// Session account.
    pub address: Pubkey,
    /// Token program of the mint.
    pub token_program: Pubkey,
    /// Nonce of the session PDA.
    pub nonce: u64,
    /// The session's incarnation (the slot it was opened in; 0 when the open was in doubt).
    #[serde(default)]
    pub opened_slot: u64,
    /// The signed offer the session was opened on.
    pub offer: Offer,
    /// The voucher key's 32-byte ed25519 secret, hex.
    pub voucher_secret: Hash32,
    /// Total deposited.
    pub deposit: u64,
    /// Latency penalties the agent's disputes recorded on chain (paid back at settlement).
    pub refunded: u64,
    /// Cumulative of the last accepted voucher.
    pub accepted: u64,
    /// seq of the last voucher.
    pub seq: u64,
    /// Unix seconds of expiry (from the chain).
    pub expires_at: i64,
    /// Receipt chain head.
    pub head: Hash32,
    /// Breach receipts.
    pub breaches: Vec<BreachRecord>,
    /// Seqs of receipts adopted from `409 voucher_conflict` answers: charged, but their content
    /// never arrived, so they prove no service (absent in records of earlier versions).
    #[serde(default)]
    pub recovered: Vec<u64>,
    /// Requests with a 2xx answer and a valid `ok` receipt.
    pub ok_requests: u64,
    /// Paid requests that failed.
    pub failed_requests: u64,
    /// Local state.
    pub state: AgentSessionState,
    /// The URLs (origin + path) this session paid for.
    pub routes: Vec<String>,
    /// A streamed answer cut before its receipt arrived (fetched before the next voucher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_receipt: Option<PendingReceipt>,
    /// The fee sponsor the provider named for this session (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<x402pp_protocol::sponsor::SponsorInfo>,
    /// Who paid the session's rent and gets it back (absent: the agent's wallet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rent_payer: Option<Pubkey>,
}

/// The store: a directory, or nothing.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: Option<PathBuf>,
}

fn store_error(path: &Path, e: impl Into<StoreError>) -> ClientError {
    ClientError::Store {
        path: path.to_owned(),
        source: e.into(),
    }
}

impl Store {
    /// Opens (creating) the directory.
    pub fn open(dir: Option<PathBuf>) -> Result<Self, ClientError> {
        if let Some(dir) = &dir {
            fs::create_dir_all(dir).map_err(|e| store_error(dir, e))?;
        }
        Ok(Self { dir })
    }

    /// Every stored session with its receipts.
    pub fn load(&self) -> Result<Vec<(StoredSession, Vec<Receipt>)>, ClientError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| store_error(dir, e))? {
            let path = entry.map_err(|e| store_error(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|e| store_error(&path, e))?;
            let record: StoredSession =
                serde_json::from_str(&text).map_err(|e| store_error(&path, e))?;
            let receipts_path = dir.join(format!("{}.receipts.jsonl", record.address));
            let mut receipts = Vec::new();
            if receipts_path.exists() {
                let file =
                    File::open(&receipts_path).map_err(|e| store_error(&receipts_path, e))?;
                for line in BufReader::new(file).lines() {
                    let line = line.map_err(|e| store_error(&receipts_path, e))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    receipts.push(
                        serde_json::from_str(&line).map_err(|e| store_error(&receipts_path, e))?,
                    );
                }
            }
            out.push((record, receipts));
        }
        Ok(out)
    }

    /// Writes a session record atomically.
    pub fn save(&self, record: &StoredSession) -> Result<(), ClientError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(format!("{}.json", record.address));
        let tmp = dir.join(format!("{}.json.tmp", record.address));
        let text = serde_json::to_vec_pretty(record).map_err(|e| store_error(&path, e))?;
        {
            let mut file = private_file(&tmp, true)?;
            file.write_all(&text).map_err(|e| store_error(&tmp, e))?;
            file.sync_all().map_err(|e| store_error(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| store_error(&path, e))
    }

    /// Appends a verified receipt.
    pub fn append_receipt(&self, session: &Pubkey, receipt: &Receipt) -> Result<(), ClientError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(format!("{session}.receipts.jsonl"));
        let mut line = serde_json::to_vec(receipt).map_err(|e| store_error(&path, e))?;
        line.push(b'\n');
        let mut file = private_file(&path, false)?;
        file.write_all(&line).map_err(|e| store_error(&path, e))
    }
}

fn private_file(path: &Path, truncate: bool) -> Result<File, ClientError> {
    let mut options = OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| store_error(path, e))
}
