//! The `localnet_*` control methods: the localnet's description, test-token minting, and moving
//! the clock and the slot.

use jsonrpc_core::{Params, Value};
use serde::Deserialize;
use serde_json::json;

use super::params::{invalid_params, parse_object, to_value, verify_pubkey};
use super::{Result, RpcState};

impl RpcState {
    pub(super) fn localnet_info(&self) -> Result<Value> {
        let bank = self.chain.bank();
        let mut info = to_value(&self.info)?;
        if let Value::Object(map) = &mut info {
            map.insert("slot".into(), json!(bank.slot()));
            map.insert("blockHeight".into(), json!(bank.block_height()));
            map.insert("unixTimestamp".into(), json!(bank.clock().unix_timestamp));
        }
        Ok(info)
    }

    pub(super) fn localnet_mint_to(&self, params: Params) -> Result<Value> {
        let request: MintToRequest = parse_object(params)?;
        let owner = verify_pubkey(&request.owner)?;
        let mint = match &request.mint {
            Some(mint) => verify_pubkey(mint)?,
            None => self.info.usdc_mint,
        };
        let amount = request.amount.value()?;
        let (signature, token_account) = self
            .chain
            .mint_to(&mint, &owner, amount)
            .map_err(|e| invalid_params(format!("mint failed: {e}")))?;
        Ok(json!({
            "signature": signature.to_string(),
            "mint": mint.to_string(),
            "owner": owner.to_string(),
            "tokenAccount": token_account.to_string(),
            "amount": amount.to_string(),
        }))
    }

    pub(super) fn localnet_warp_clock(&self, params: Params) -> Result<Value> {
        let request: WarpClockRequest = parse_object(params)?;
        let result = match (request.unix_timestamp, request.seconds) {
            (Some(at), None) => self.chain.warp_clock_to(at),
            (None, Some(seconds)) => self.chain.advance_clock(seconds),
            _ => {
                return Err(invalid_params(
                    "Invalid params: give exactly one of `unixTimestamp` or `seconds`.",
                ))
            }
        };
        let (slot, unix_timestamp) = result.map_err(|e| invalid_params(e.to_string()))?;
        Ok(json!({ "slot": slot, "unixTimestamp": unix_timestamp }))
    }

    pub(super) fn localnet_advance_slots(&self, params: Params) -> Result<Value> {
        let request: AdvanceSlotsRequest = parse_object(params)?;
        if request.slots > MAX_ADVANCE_SLOTS {
            return Err(invalid_params(format!(
                "Invalid params: at most {MAX_ADVANCE_SLOTS} slots at a time."
            )));
        }
        self.chain.advance_slots(request.slots);
        let bank = self.chain.bank();
        Ok(json!({ "slot": bank.slot(), "blockHeight": bank.block_height() }))
    }
}

/// Upper bound of one `localnet_advanceSlots` call (each slot is real work).
const MAX_ADVANCE_SLOTS: u64 = 10_000;

/// `localnet_mintTo` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintToRequest {
    mint: Option<String>,
    owner: String,
    amount: Amount,
}

/// An amount given as a JSON number or a decimal string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    fn value(&self) -> Result<u64> {
        match self {
            Amount::Number(n) => Ok(*n),
            Amount::Text(s) => s
                .parse()
                .map_err(|_| invalid_params(format!("Invalid params: bad amount {s:?}."))),
        }
    }
}

/// `localnet_warpClock` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WarpClockRequest {
    unix_timestamp: Option<i64>,
    seconds: Option<u64>,
}

/// `localnet_advanceSlots` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceSlotsRequest {
    slots: u64,
}
