//! The provider as fee sponsor of its own sessions (`ServerConfig::sponsor`): agents that hold
//! no SOL send their escrow transactions to `POST` [`SPONSOR_PATH`], the provider's key pays
//! the fee and the rent (and gets the rent back when the session closes). The checks and the
//! per-agent rate are [`x402pp_solana::sponsor`]'s.

use x402pp_protocol::sponsor::{SponsorInfo, SponsorResponse};
use x402pp_protocol::{ErrorCode, Pubkey};
use x402pp_solana::sponsor::{SponsorError, SponsoredInstruction};

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
        match sponsor.answer(body).await {
            Ok((response, done)) => {
                if let SponsoredInstruction::OpenSession { .. } = done.instruction {
                    // Into the ledger now, so the settler finalizes it (and the rent comes back)
                    // even if the agent never pays a request on it.
                    if let Err(error) = self.load_session(&done.session, true).await {
                        tracing::warn!(session = %done.session, %error, "a sponsored session is not in the ledger yet");
                    }
                }
                Ok(response)
            }
            Err(error) => Err(answer_error(&error)),
        }
    }
}

/// The error answer to a sponsor request: [`SponsorError::code`], its message, `Retry-After`
/// when rate limited. An RPC failure's detail is logged, not returned.
pub(crate) fn answer_error(error: &SponsorError) -> ServerError {
    tracing::info!(reason = %error, "sponsor refused");
    let answer = ServerError::new(error.code(), error.public_message());
    match error.retry_after_secs() {
        Some(secs) => answer.with_header("retry-after", secs.to_string()),
        None => answer,
    }
}
