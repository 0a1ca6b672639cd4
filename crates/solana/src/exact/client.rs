//! Client side of exact on SVM: build and partially sign the payment transaction.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_sdk::hash::Hash;
use solana_sdk::message::{v0, VersionedMessage};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::{
    ExactSvmPayload, PaymentPayload, PaymentRequirements, ResourceInfo, X402Version2,
};

use super::{ExactRequirements, DEFAULT_COMPUTE_UNIT_LIMIT, DEFAULT_COMPUTE_UNIT_PRICE};
use crate::error::ChainError;
use crate::token;

/// Everything needed to build the transaction without touching the network.
#[derive(Debug, Clone)]
pub struct PaymentPlan {
    /// Parsed requirements.
    pub requirements: ExactRequirements,
    /// Token program that owns the mint.
    pub token_program: Pubkey,
    /// Mint decimals.
    pub decimals: u8,
    /// Recent blockhash to build against.
    pub blockhash: Hash,
    /// Compute unit limit.
    pub compute_unit_limit: u32,
    /// Compute unit price in micro-lamports.
    pub compute_unit_price: u64,
}

/// Builds the versioned transaction, signed by `payer` and with the fee payer's slot empty.
pub fn build_transaction(
    payer: &Keypair,
    plan: &PaymentPlan,
) -> Result<VersionedTransaction, ChainError> {
    let req = &plan.requirements;
    let source = token::associated_token_address(&payer.pubkey(), &req.asset, &plan.token_program);
    let destination = token::associated_token_address(&req.pay_to, &req.asset, &plan.token_program);
    let memo = match &req.memo {
        Some(memo) => memo.clone(),
        None => {
            let mut nonce = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            nonce.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let instructions = [
        ComputeBudgetInstruction::set_compute_unit_limit(plan.compute_unit_limit),
        ComputeBudgetInstruction::set_compute_unit_price(plan.compute_unit_price),
        token::transfer_checked(
            &plan.token_program,
            &source,
            &req.asset,
            &destination,
            &payer.pubkey(),
            req.amount,
            plan.decimals,
        ),
        token::memo(&memo),
    ];
    let message = v0::Message::try_compile(&req.fee_payer, &instructions, &[], plan.blockhash)
        .map_err(|e| ChainError::Build(e.to_string()))?;
    let message = VersionedMessage::V0(message);
    let signers = usize::from(message.header().num_required_signatures);
    let mut signatures = vec![Signature::default(); signers];
    let position = message
        .static_account_keys()
        .iter()
        .take(signers)
        .position(|k| *k == payer.pubkey())
        .ok_or_else(|| ChainError::Build("payer is not a signer of its own transfer".into()))?;
    signatures[position] = payer.sign_message(&message.serialize());
    Ok(VersionedTransaction {
        signatures,
        message,
    })
}

/// Looks up the mint and a blockhash, then builds the `PaymentPayload` for `requirements`.
pub async fn build_payment(
    rpc: &RpcClient,
    payer: &Keypair,
    requirements: &PaymentRequirements,
    resource: Option<ResourceInfo>,
) -> Result<PaymentPayload, ChainError> {
    let parsed =
        ExactRequirements::parse(requirements).map_err(|e| ChainError::Build(e.to_string()))?;
    let mint = rpc
        .get_account(&parsed.asset)
        .await
        .map_err(ChainError::rpc)?;
    if !token::is_token_program(&mint.owner) {
        return Err(ChainError::Build(format!(
            "{} is not a token mint",
            parsed.asset
        )));
    }
    let decimals = token::mint_decimals(&mint.data)
        .ok_or_else(|| ChainError::Build(format!("{} is not a token mint", parsed.asset)))?;
    let blockhash = match requirements
        .extra
        .as_ref()
        .and_then(|e| e.get("recentBlockhash"))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<Hash>().ok())
    {
        Some(hash) => hash,
        None => rpc.get_latest_blockhash().await.map_err(ChainError::rpc)?,
    };
    let plan = PaymentPlan {
        requirements: parsed,
        token_program: mint.owner,
        decimals,
        blockhash,
        compute_unit_limit: DEFAULT_COMPUTE_UNIT_LIMIT,
        compute_unit_price: DEFAULT_COMPUTE_UNIT_PRICE,
    };
    let tx = build_transaction(payer, &plan)?;
    let bytes = bincode::serialize(&tx).map_err(|e| ChainError::Build(e.to_string()))?;
    Ok(PaymentPayload {
        x402_version: X402Version2,
        resource,
        accepted: requirements.clone(),
        payload: serde_json::to_value(ExactSvmPayload {
            transaction: STANDARD.encode(bytes),
        })
        .map_err(|e| ChainError::Build(e.to_string()))?,
        extensions: None,
    })
}
