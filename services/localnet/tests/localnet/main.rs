//! Integration tests of the localnet over real HTTP on 127.0.0.1: `solana-client`'s
//! `RpcClient`, raw (malformed) JSON-RPC, and `@solana/kit` through node.

#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, missing_docs)]

mod common;
mod escrow;
mod expiry;
mod kit;
mod malformed;
mod rpc_client;
