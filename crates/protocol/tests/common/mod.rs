//! Deterministic fixtures shared by the protocol crate's integration tests.
#![allow(dead_code, missing_docs)]

use ed25519_dalek::SigningKey;
use x402pp_protocol::crypto::pubkey_of;
use x402pp_protocol::{
    Amount, Cut, Hash32, Id16, MeteringTerms, Network, OfferSla, OfferTerms, Pubkey, ReceiptBody,
    ReceiptStatus, ReceiptUsage, SlaVerification, UnitKind,
};

pub const PROVIDER_SEED: [u8; 32] = [0x11; 32];
pub const AGENT_SEED: [u8; 32] = [0x22; 32];
pub const VOUCHER_SIGNER_SEED: [u8; 32] = [0x33; 32];
pub const OTHER_SEED: [u8; 32] = [0x44; 32];

pub fn key(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

pub fn provider() -> SigningKey {
    key(PROVIDER_SEED)
}

pub fn voucher_signer() -> SigningKey {
    key(VOUCHER_SIGNER_SEED)
}

pub fn other() -> SigningKey {
    key(OTHER_SEED)
}

/// A fixed mint address (the bytes of a well-known devnet USDC mint are not needed here).
pub fn mint() -> Pubkey {
    Pubkey([0x55; 32])
}

pub fn escrow_program() -> Pubkey {
    Pubkey([0x66; 32])
}

pub fn session() -> Pubkey {
    Pubkey([0x77; 32])
}

pub fn offer_terms() -> OfferTerms {
    OfferTerms {
        offer_id: Id16([0xa1; 16]),
        intent_id: Some(Id16([0xb2; 16])),
        resource: "http://127.0.0.1:8080/v1/inference".into(),
        provider: pubkey_of(&provider()),
        network: Network::solana_devnet(),
        asset: mint(),
        escrow_program: escrow_program(),
        price_per_request: Amount(1_000),
        min_deposit: Amount(100_000),
        session_ttl_secs: 3_600,
        grace_secs: 600,
        sla: OfferSla {
            max_latency_ms: 250,
            max_input_bytes: 65_536,
            latency_penalty_bps: 5_000,
        },
        expires_at: 1_800_000_000,
        metering: None,
    }
}

/// The body of receipt number `seq` charging `amount`, chained after `prev`.
pub fn receipt_body(
    seq: u64,
    amount: u64,
    cumulative: u64,
    latency_ms: u32,
    prev: Hash32,
) -> ReceiptBody {
    let completed = 1_800_000_000_000_i64 + i64::try_from(seq).expect("small") * 1_000;
    ReceiptBody {
        session_id: session(),
        opened_slot: 42,
        request_number: seq,
        input_hash: x402pp_protocol::crypto::input_hash(
            "POST",
            "/v1/inference",
            b"{\"prompt\":\"hi\"}",
        ),
        output_hash: x402pp_protocol::crypto::output_hash(b"{\"text\":\"hello\"}"),
        request_started_at: completed - i64::from(latency_ms),
        request_completed_at: completed,
        latency_ms,
        status: if amount == 0 {
            ReceiptStatus::HandlerError
        } else {
            ReceiptStatus::Ok
        },
        sla_covered: true,
        amount_charged: Amount(amount),
        cumulative_charged: Amount(cumulative),
        prev_receipt_hash: prev,
        sla_verification: SlaVerification::latency(250, latency_ms),
        provider: pubkey_of(&provider()),
        usage: None,
    }
}

/// The metering terms of the design's worked example: base 100 (the offer's price), 2 000 per
/// 1 000 output tokens, input free, at most 1 000 per request.
pub fn metering() -> MeteringTerms {
    MeteringTerms {
        unit: UnitKind::Tokens,
        unit_size: 1_000,
        unit_price_in: Amount(0),
        unit_price_out: Amount(2_000),
        max_per_request: Amount(1_000),
    }
}

/// A metered offer: [`offer_terms`] with base 100 and [`metering`].
pub fn metered_offer_terms() -> OfferTerms {
    OfferTerms {
        price_per_request: Amount(100),
        metering: Some(metering()),
        ..offer_terms()
    }
}

/// The body of metered receipt `seq`, chained after `prev`: `units_out` tokens over
/// `output_bytes` bytes, `status` and `cut`, charging `amount` to `cumulative`.
#[allow(clippy::too_many_arguments)]
pub fn metered_receipt_body(
    seq: u64,
    amount: u64,
    cumulative: u64,
    (units_in, units_out, output_bytes): (u64, u64, u64),
    status: ReceiptStatus,
    cut: Cut,
    streamed: bool,
    prev: Hash32,
) -> ReceiptBody {
    let ttfb = 40;
    let mut body = receipt_body(seq, amount, cumulative, ttfb, prev);
    body.status = status;
    body.usage = Some(ReceiptUsage {
        units_in,
        units_out,
        output_bytes,
        ttfb_ms: ttfb,
        total_ms: 900,
        cut,
        streamed,
        units_estimated: cut != Cut::None,
    });
    body
}
