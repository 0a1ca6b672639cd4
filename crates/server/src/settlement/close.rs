//! Cooperative closes of finished sessions (nothing left to claim; the agent asked to close, or
//! the session expired).

use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signer;
use x402pp_protocol::SessionState;
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::{token, ChainError};

use super::claim::Signed;
use super::{payable, pubkey, Outcome, SettleError, SettleReport, Settler};
use crate::ledger::{claim_deadline, Address, SessionRecord};

impl Settler {
    /// Cooperative `close` of sessions with nothing left to claim whose agent asked to close or
    /// that expired.
    pub(super) async fn close_finished(
        &self,
        now_unix: i64,
        report: &mut SettleReport,
    ) -> Result<(), SettleError> {
        let pending: Vec<Address> = self
            .ledger
            .pending_claims()
            .await?
            .into_iter()
            .map(|c| c.address)
            .collect();
        for record in self.ledger.open_sessions().await? {
            let chain = &record.chain;
            let finished = chain.state == SessionState::Closing || now_unix >= chain.expires_at;
            if !finished || pending.contains(&chain.address) || now_unix > claim_deadline(chain) {
                continue;
            }
            match self.close_one(&record, report).await {
                Ok(()) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    report.errors = report.errors.saturating_add(1);
                    tracing::warn!(session = %pubkey(&chain.address), %error, "could not close");
                }
            }
        }
        Ok(())
    }

    pub(super) async fn close_one(
        &self,
        record: &SessionRecord,
        report: &mut SettleReport,
    ) -> Result<(), SettleError> {
        let address = record.chain.address;
        let Some((account, token_program)) = self.refresh(&address).await? else {
            return Ok(());
        };
        let left = record.best_voucher.map_or(0, |v| payable(&account, &v));
        if left > 0 || account.provider != self.provider.pubkey() {
            return Ok(()); // a claim comes first (by policy, at the latest near the deadline)
        }
        let key = Pubkey::new_from_array(address);
        let keys = SessionKeys::of(key, &account, token_program);
        let payer = self.provider.pubkey();
        let mut instructions = vec![token::create_associated_token_account_idempotent(
            &payer,
            &payer,
            &account.mint,
            &token_program,
        )];
        instructions.extend(escrow::close(&keys, None));
        let Signed {
            tx,
            signature,
            blockhash: _,
            last_valid_block_height,
        } = self.sign(&instructions, &keys, &payer, "close").await?;
        self.rpc
            .send_transaction(&tx)
            .await
            .map_err(ChainError::rpc)?;
        if self
            .await_outcome(&signature, last_valid_block_height)
            .await?
            == Outcome::Confirmed
        {
            self.ledger.mark_closed(&address).await?;
            report.closed = report.closed.saturating_add(1);
            tracing::info!(session = %key, %signature, "session closed");
        }
        Ok(())
    }
}
