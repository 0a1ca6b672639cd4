//! The provider as fee sponsor of its own sessions (`ServerConfig::sponsor`): agents that hold
//! no SOL send their escrow transactions to `POST` [`SPONSOR_PATH`], the provider's key pays
//! the fee and the rent (and gets the rent back when the session closes). The checks and the
//! per-agent rate are [`x402pp_solana::sponsor`]'s.

use x402pp_protocol::sponsor::{SponsorInfo, SponsorRequest, SponsorResponse};
use x402pp_protocol::{ErrorCode, Pubkey};
use x402pp_solana::sponsor::{
    decode_transaction, SponsorError, SponsorRefusal, SponsoredInstruction,
};
use x402pp_solana::ChainError;

use crate::error::ServerError;
use crate::provider::Provider;

/// Where the reference provider serves sponsorship.
pub const SPONSOR_PATH: &str = "/x402pp/sponsor";

impl Provider {
    /// The sponsor the provider names in its session options, when it sponsors.
    pub fn sponsor_info(&self) -> Option<SponsorInfo> {
        let sponsor = self.sponsor.as_ref()?;
        Some(SponsorInfo {
            url: format!(
                "{}{SPONSOR_PATH}",
                self.config().public_url.trim_end_matches('/')
            ),
            fee_payer: Pubkey(sponsor.pubkey().to_bytes()),
        })
    }

    /// Answers a sponsor request (`body` is a JSON [`SponsorRequest`]): checks, co-signs, sends
    /// and confirms the agent's transaction.
    pub async fn sponsor(&self, body: &[u8]) -> Result<SponsorResponse, ServerError> {
        let Some(sponsor) = self.sponsor.as_ref() else {
            return Err(ServerError::new(
                ErrorCode::SponsorRefused,
                "this provider does not sponsor transactions",
            ));
        };
        let request: SponsorRequest = serde_json::from_slice(body).map_err(|e| {
            ServerError::new(
                ErrorCode::MalformedRequest,
                format!("body is not a sponsor request: {e}"),
            )
        })?;
        let tx = decode_transaction(&request.transaction).map_err(refused)?;
        match sponsor.sponsor(tx).await {
            Ok((signature, done)) => {
                if let SponsoredInstruction::OpenSession { .. } = done.instruction {
                    // Into the ledger now, so the settler finalizes it (and the rent comes back)
                    // even if the agent never pays a request on it.
                    if let Err(error) = self.load_session(&done.session, true).await {
                        tracing::warn!(session = %done.session, %error, "a sponsored session is not in the ledger yet");
                    }
                }
                Ok(SponsorResponse {
                    signature: signature.to_string(),
                    instruction: done.instruction.name().to_owned(),
                })
            }
            Err(SponsorError::Refused(refusal)) => Err(refused(refusal)),
            Err(SponsorError::Chain(error)) => Err(chain(error)),
        }
    }
}

fn refused(refusal: SponsorRefusal) -> ServerError {
    match refusal {
        SponsorRefusal::Malformed(_) => {
            ServerError::new(ErrorCode::MalformedRequest, refusal.to_string())
        }
        SponsorRefusal::RateLimited { retry_after, .. } => {
            ServerError::new(ErrorCode::RateLimited, refusal.to_string())
                .with_header("retry-after", retry_after.as_secs().max(1).to_string())
        }
        other => {
            tracing::info!(reason = %other, "sponsor refused");
            ServerError::new(ErrorCode::SponsorRefused, other.to_string())
        }
    }
}

fn chain(error: ChainError) -> ServerError {
    match error {
        // The chain says the transaction failed (the state changed after the simulation):
        // nothing landed.
        ChainError::Failed { .. }
        | ChainError::Rejected {
            transaction_error: Some(_),
            ..
        } => ServerError::new(ErrorCode::SponsorRefused, error.to_string()),
        // Not reached, or sent and not seen landing: the agent finds out from the chain.
        other => ServerError::chain_unavailable(other),
    }
}
