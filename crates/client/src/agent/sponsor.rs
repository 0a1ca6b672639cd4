//! Fee-sponsored transactions: when the provider names a sponsor (`extra.sponsor` of its session
//! option) and [`AgentConfig::sponsorship`] says so, the wallet signs only for its tokens and
//! the sponsor pays the fee and the rent (`x402pp_solana::sponsor` says what it accepts).

use reqwest::header::CONTENT_TYPE;
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::sponsor::{SponsorInfo, SponsorRequest, SponsorResponse};
use x402pp_protocol::ErrorBody;

use super::*;
use crate::config::Sponsorship;

/// Bytes of an SPL Token account (the vault), without Token-2022 extensions.
pub(super) const VAULT_SPACE: usize = 165;
/// How long the agent waits for a sponsor's answer (it sends and confirms first).
const SPONSOR_TIMEOUT: Duration = Duration::from_secs(90);
/// What the wallet keeps for a transaction's fee when judging whether it can pay its own way:
/// three signatures (two and an Ed25519 check) and a generous priority fee.
const TX_FEE_LAMPORTS: u64 = 20_000;

impl Agent {
    /// The sponsor the session option of `challenge` names, if any.
    pub(super) fn sponsor_of(challenge: &Challenge, network: &Network) -> Option<SponsorInfo> {
        challenge
            .required
            .option(SCHEME_SESSION, network)?
            .extra_as::<SessionExtra>()?
            .sponsor
    }

    /// What the wallet needs in SOL for a transaction creating accounts of `spaces` bytes: their
    /// rent and the fee. An RPC that cannot say counts as nothing to create.
    async fn lamports_needed(&self, spaces: &[usize]) -> u64 {
        let mut needed = TX_FEE_LAMPORTS;
        for &space in spaces {
            let rent = self
                .inner
                .rpc
                .get_minimum_balance_for_rent_exemption(space)
                .await
                .unwrap_or(0);
            needed = needed.saturating_add(rent);
        }
        needed
    }

    /// Whether `offered` pays for a transaction creating accounts of `spaces` bytes, by
    /// [`AgentConfig::sponsorship`] (the chain is asked only when it depends on the wallet).
    pub(super) async fn sponsor_to_use(
        &self,
        offered: Option<&SponsorInfo>,
        spaces: &[usize],
    ) -> Option<SponsorInfo> {
        let offered = offered?;
        match self.inner.config.sponsorship {
            Sponsorship::Never => None,
            Sponsorship::Always => Some(offered.clone()),
            Sponsorship::WhenNeeded => {
                let lamports = self.lamports_needed(spaces).await;
                let balance = self.inner.rpc.get_balance(&self.address()).await;
                // An RPC that cannot say: the wallet pays, and the send reports the outage.
                match balance {
                    Ok(balance) if balance < lamports => Some(offered.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Sends a transaction of `session` through its sponsor when [`Agent::sponsor_to_use`] says
    /// so (it creates nothing: only the fee is at stake), else with the wallet.
    pub(super) async fn send_session_transaction(
        &self,
        instructions: &[Instruction],
        session: &SessionHandle,
    ) -> Result<Signature, ClientError> {
        let sponsor = self.sponsor_to_use(session.sponsor.as_ref(), &[]).await;
        self.send_via(instructions, &session.keys, sponsor.as_ref())
            .await
    }

    /// Sends `instructions` through `sponsor` when there is one, else signed and paid by the
    /// wallet ([`Agent::send_transaction`]).
    pub(super) async fn send_via(
        &self,
        instructions: &[Instruction],
        keys: &SessionKeys,
        sponsor: Option<&SponsorInfo>,
    ) -> Result<Signature, ClientError> {
        match sponsor {
            Some(sponsor) => self.send_sponsored(instructions, keys, sponsor).await,
            None => self.send_transaction(instructions, keys).await,
        }
    }

    /// Signs `instructions` (with their compute budget) with the wallet, the sponsor as fee
    /// payer, and has the sponsor send them; returns the signature once the sponsor saw it
    /// confirmed. A sponsor that cannot be reached, or that sent and could not confirm, is a
    /// transient chain error (the transaction may have landed); a refusal is
    /// [`ClientError::SponsorRefused`] (nothing was sent).
    pub(super) async fn send_sponsored(
        &self,
        instructions: &[Instruction],
        keys: &SessionKeys,
        sponsor: &SponsorInfo,
    ) -> Result<Signature, ClientError> {
        let wallet = &*self.inner.config.keypair;
        let fee_payer = sol_key(&sponsor.fee_payer);
        let instructions =
            compute::with_compute_budget(instructions, keys, self.inner.config.compute_unit_price);
        let blockhash = self
            .inner
            .rpc
            .get_latest_blockhash()
            .await
            .map_err(ChainError::rpc)?;
        let mut transaction = Transaction::new_with_payer(&instructions, Some(&fee_payer));
        transaction.message.recent_blockhash = blockhash;
        // The wallet signs what needs it (not `finalize`, which only the fee payer signs).
        if transaction
            .message
            .signer_keys()
            .contains(&&wallet.pubkey())
        {
            transaction
                .try_partial_sign(&[wallet], blockhash)
                .map_err(|e| ChainError::Build(e.to_string()))?;
        }
        let body = SponsorRequest {
            transaction: x402pp_solana::sponsor::encode_transaction(&VersionedTransaction::from(
                transaction,
            ))?,
        };
        let unavailable = |why: String| {
            ClientError::Chain(ChainError::Unavailable(format!(
                "fee sponsor {}: {why}",
                sponsor.url
            )))
        };
        let response = self
            .inner
            .http
            .post(&sponsor.url)
            // The sponsor confirms before it answers: a generous bound, not an endless wait.
            .timeout(SPONSOR_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if status.is_success() {
            let answer: SponsorResponse = serde_json::from_str(&text).map_err(|e| {
                unavailable(format!("an answer that is not a sponsor response: {e}"))
            })?;
            let signature = answer
                .signature
                .parse()
                .map_err(|_| unavailable(format!("a bad signature {}", answer.signature)))?;
            bump(&self.inner.stats.transactions, 1);
            bump(&self.inner.stats.sponsored_transactions, 1);
            return Ok(signature);
        }
        let refusal: Option<ErrorBody> = serde_json::from_str(&text).ok();
        match refusal {
            Some(body) if status.is_client_error() => Err(ClientError::SponsorRefused {
                status: status.as_u16(),
                code: RefusalCode::Known(body.error),
                message: body.message,
            }),
            Some(body) => Err(unavailable(format!(
                "{status} {}: {}",
                body.error, body.message
            ))),
            None => Err(unavailable(format!(
                "{status} without an x402++ error body"
            ))),
        }
    }
}
