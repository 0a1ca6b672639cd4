//! The JSON-RPC 2.0 methods.
//!
//! Dispatch, batches and the protocol-level errors (`-32700` parse error, `-32600` invalid
//! request, `-32601` method not found) come from `jsonrpc-core`, the crate Agave's own RPC
//! server is built on. Parameters are positional, parsed into the request types of
//! `solana-rpc-client-api`; results are its response types and those of
//! `solana-account-decoder` / `solana-transaction-status-client-types`, so the JSON has exactly
//! the shapes `solana-client` and `@solana/kit` expect. Error codes and messages follow Agave's
//! `rpc.rs` (`RpcCustomError` supplies the server-specific ones).
//!
//! Commitment levels are accepted and all answer from the working bank: the localnet never
//! forks, so what it processed is final (see `docs/localnet.md`).

use std::sync::Arc;

use jsonrpc_core::{Error, IoHandler, Params};
use serde_json::json;

use crate::chain::Chain;
use crate::LocalnetInfo;

mod encode;
mod localnet;
mod params;
mod state;
mod transactions;

type Result<T> = std::result::Result<T, Error>;

/// Largest transaction on the wire.
const PACKET_DATA_SIZE: usize = 1232;
/// Largest base58 / base64 text of a transaction.
const MAX_BASE58_SIZE: usize = 1683;
const MAX_BASE64_SIZE: usize = 1644;
/// Inputs per call, as on a validator.
const MAX_MULTIPLE_ACCOUNTS: usize = 100;
const MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS: usize = 256;

/// What the methods share.
pub(crate) struct RpcState {
    pub chain: Arc<Chain>,
    pub info: LocalnetInfo,
}

/// The largest account a program can allocate (`MAX_PERMITTED_DATA_LENGTH`, 10 MiB).
const MAX_ACCOUNT_DATA_LEN: usize = 10 * 1024 * 1024;

/// All methods, standard and `localnet_*`.
pub(crate) fn handler(state: Arc<RpcState>) -> IoHandler {
    let mut io = IoHandler::new();
    macro_rules! method {
        ($name:literal, |$s:ident, $p:ident| $body:expr) => {{
            let $s = state.clone();
            io.add_sync_method($name, move |$p: Params| {
                let $s = &$s;
                $body
            });
        }};
    }
    method!("getHealth", |s, p| {
        let _ = (s, p);
        Ok(json!("ok"))
    });
    method!("getVersion", |s, p| {
        let _ = p;
        s.get_version()
    });
    method!("getGenesisHash", |s, p| {
        let _ = p;
        Ok(json!(s.chain.genesis_hash.to_string()))
    });
    method!("getSlot", |s, p| s.get_slot(p));
    method!("getBlockHeight", |s, p| s.get_block_height(p));
    method!("getEpochInfo", |s, p| s.get_epoch_info(p));
    method!("getLatestBlockhash", |s, p| s.get_latest_blockhash(p));
    method!("isBlockhashValid", |s, p| s.is_blockhash_valid(p));
    method!("getFeeForMessage", |s, p| s.get_fee_for_message(p));
    method!("getMinimumBalanceForRentExemption", |s, p| s
        .get_minimum_balance_for_rent_exemption(p));
    method!("getBalance", |s, p| s.get_balance(p));
    method!("getAccountInfo", |s, p| s.get_account_info(p));
    method!("getMultipleAccounts", |s, p| s.get_multiple_accounts(p));
    method!("getTokenAccountBalance", |s, p| s
        .get_token_account_balance(p));
    method!("getSignatureStatuses", |s, p| s.get_signature_statuses(p));
    method!("getTransaction", |s, p| s.get_transaction(p));
    method!("sendTransaction", |s, p| s.send_transaction(p));
    method!("simulateTransaction", |s, p| s.simulate_transaction(p));
    method!("requestAirdrop", |s, p| s.request_airdrop(p));
    method!("localnet_info", |s, p| {
        let _ = p;
        s.localnet_info()
    });
    method!("localnet_mintTo", |s, p| s.localnet_mint_to(p));
    method!("localnet_warpClock", |s, p| s.localnet_warp_clock(p));
    method!("localnet_advanceSlots", |s, p| s.localnet_advance_slots(p));
    io
}
