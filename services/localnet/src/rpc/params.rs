//! Parameter parsing and decoding as a validator does it: positional parameters, base58/base64
//! transactions with the wire size limits, and the error values of invalid input.

use std::any::type_name;
use std::str::FromStr;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use jsonrpc_core::{Error, ErrorCode, Params, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use solana_commitment_config::CommitmentConfig;
use solana_hash::Hash;
use solana_pubkey::Pubkey;
use solana_rpc_client_api::response::{Response, RpcResponseContext};
use solana_runtime::bank::Bank;
use solana_signature::Signature;
use solana_transaction_status_client_types::{TransactionBinaryEncoding, UiTransactionEncoding};

use super::{Result, MAX_BASE58_SIZE, MAX_BASE64_SIZE, PACKET_DATA_SIZE};

pub(super) fn invalid_params(message: impl Into<String>) -> Error {
    Error::invalid_params(message.into())
}

pub(super) fn internal_error(message: impl Into<String>) -> Error {
    Error {
        code: ErrorCode::InternalError,
        message: message.into(),
        data: None,
    }
}

/// Positional parameters into a tuple of `arity` elements; missing trailing ones are `null`
/// (so `Option` parameters may be left out, as jsonrpc-derive allows).
pub(super) fn parse<T: DeserializeOwned>(params: Params, arity: usize) -> Result<T> {
    let value = match params {
        Params::None => Value::Array(vec![Value::Null; arity]),
        Params::Array(mut items) => {
            if items.len() < arity {
                items.resize(arity, Value::Null);
            }
            Value::Array(items)
        }
        Params::Map(map) => Value::Object(map),
    };
    serde_json::from_value(value).map_err(|e| invalid_params(format!("Invalid params: {e}.")))
}

/// A single object parameter, given by name (`{...}`) or as the only positional one.
pub(super) fn parse_object<T: DeserializeOwned>(params: Params) -> Result<T> {
    let value = match params {
        Params::Map(map) => Value::Object(map),
        Params::Array(mut items) if items.len() == 1 => items.remove(0),
        Params::None => Value::Object(Default::default()),
        Params::Array(_) => return Err(invalid_params("Invalid params: expected one object.")),
    };
    serde_json::from_value(value).map_err(|e| invalid_params(format!("Invalid params: {e}.")))
}

pub(super) fn verify_pubkey(input: &str) -> Result<Pubkey> {
    Pubkey::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

pub(super) fn verify_hash(input: &str) -> Result<Hash> {
    Hash::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

pub(super) fn verify_signature(input: &str) -> Result<Signature> {
    Signature::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

pub(super) fn to_value<T: Serialize>(value: T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| internal_error(format!("cannot encode result: {e}")))
}

pub(super) fn respond<T: Serialize>(bank: &Bank, value: T) -> Result<Value> {
    to_value(Response {
        context: RpcResponseContext::new(bank.slot()),
        value,
    })
}

/// Decodes a base58/base64 bincode blob (a transaction or a message) with the validator's
/// size limits and messages.
pub(super) fn decode_and_deserialize<T: DeserializeOwned>(
    encoded: &str,
    encoding: TransactionBinaryEncoding,
) -> Result<T> {
    let wire = match encoding {
        TransactionBinaryEncoding::Base58 => {
            if encoded.len() > MAX_BASE58_SIZE {
                return Err(invalid_params(format!(
                    "base58 encoded {} too large: {} bytes (max: encoded/raw {}/{})",
                    type_name::<T>(),
                    encoded.len(),
                    MAX_BASE58_SIZE,
                    PACKET_DATA_SIZE,
                )));
            }
            bs58::decode(encoded)
                .into_vec()
                .map_err(|e| invalid_params(format!("invalid base58 encoding: {e:?}")))?
        }
        TransactionBinaryEncoding::Base64 => {
            if encoded.len() > MAX_BASE64_SIZE {
                return Err(invalid_params(format!(
                    "base64 encoded {} too large: {} bytes (max: encoded/raw {}/{})",
                    type_name::<T>(),
                    encoded.len(),
                    MAX_BASE64_SIZE,
                    PACKET_DATA_SIZE,
                )));
            }
            BASE64_STANDARD
                .decode(encoded)
                .map_err(|e| invalid_params(format!("invalid base64 encoding: {e:?}")))?
        }
    };
    if wire.len() > PACKET_DATA_SIZE {
        return Err(invalid_params(format!(
            "decoded {} too large: {} bytes (max: {} bytes)",
            type_name::<T>(),
            wire.len(),
            PACKET_DATA_SIZE
        )));
    }
    use bincode::Options as _;
    bincode::options()
        .with_limit(PACKET_DATA_SIZE as u64)
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .deserialize_from(&wire[..])
        .map_err(|e| invalid_params(format!("failed to deserialize {}: {}", type_name::<T>(), e)))
}

pub(super) fn binary_encoding(
    encoding: UiTransactionEncoding,
) -> Result<TransactionBinaryEncoding> {
    encoding.into_binary_encoding().ok_or_else(|| {
        invalid_params(format!(
            "unsupported encoding: {encoding}. Supported encodings: base58, base64"
        ))
    })
}

pub(super) fn check_at_least_confirmed(commitment: Option<CommitmentConfig>) -> Result<()> {
    match commitment {
        Some(c) if !c.is_at_least_confirmed() => Err(invalid_params(
            "Method does not support commitment below `confirmed`",
        )),
        _ => Ok(()),
    }
}
