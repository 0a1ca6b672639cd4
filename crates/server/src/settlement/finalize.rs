//! Finalizing sessions whose dispute window has passed: `finalize` pays the provider what it
//! earned less the penalties and the agent the rest, and closes the session (anyone may send it;
//! the provider does when it has something to collect, since it is the one waiting for its
//! money; a session that pays it nothing is left to the agent).

use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signer;
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::ChainError;

use super::claim::Signed;
use super::{pubkey, Outcome, SettleError, SettleReport, Settler};
use crate::ledger::{Address, SessionRecord};

impl Settler {
    /// `finalize` of every session of the ledger whose dispute deadline has passed at
    /// `now_unix`, except those with a claim still pending.
    pub(super) async fn finalize_due(
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
            if !chain.window().finalize_open_at(now_unix) || pending.contains(&chain.address) {
                continue;
            }
            match self.finalize_one(&record, now_unix, report).await {
                Ok(()) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    report.errors = report.errors.saturating_add(1);
                    tracing::warn!(session = %pubkey(&chain.address), %error, "could not finalize");
                }
            }
        }
        Ok(())
    }

    async fn finalize_one(
        &self,
        record: &SessionRecord,
        now_unix: i64,
        report: &mut SettleReport,
    ) -> Result<(), SettleError> {
        let address = record.chain.address;
        // Fresh from the chain: a session another party finalized is marked closed here.
        let Some((account, token_program)) = self.refresh(&address).await? else {
            return Ok(());
        };
        if account.provider != self.provider.pubkey()
            || account
                .dispute_deadline()
                .map_or(true, |deadline| now_unix <= deadline)
        {
            return Ok(());
        }
        let key = Pubkey::new_from_array(address);
        let payout = account.payout();
        if payout.provider == 0 && account.rent_payer != self.provider.pubkey() {
            // Nothing for the provider (nothing settled, or penalties ate it): the rest is the
            // agent's, which finalizes when it wants; the provider pays no fee for it. (A session
            // the provider sponsored is finalized anyway: its rent comes back to the provider.)
            self.ledger.mark_closed(&address).await?;
            tracing::info!(session = %key, "nothing to collect; left to the agent to finalize");
            return Ok(());
        }
        let keys = SessionKeys::of(key, &account, token_program);
        let payer = self.provider.pubkey();
        let instructions = if payout.provider == 0 {
            // Only the sponsored rent to get back: the agent's token account is not created for
            // it (an agent could close its account each time to pocket that rent); while it is
            // missing the session waits for the agent, whose tokens are in it too.
            let agent_token = keys.agent_token();
            let exists = self
                .rpc
                .get_multiple_accounts(&[agent_token])
                .await
                .map_err(ChainError::rpc)?
                .into_iter()
                .next()
                .flatten()
                .is_some();
            if !exists {
                tracing::info!(session = %key, "the agent's token account is closed; left to the agent to finalize");
                return Ok(());
            }
            vec![
                x402pp_solana::token::create_associated_token_account_idempotent(
                    &payer,
                    &keys.provider,
                    &keys.mint,
                    &keys.token_program,
                ),
                escrow::finalize(&keys),
            ]
        } else {
            // Both payouts go to associated token accounts, which must exist: the provider
            // creates its own and, if the agent closed its account, the agent's (rent paid by
            // the provider, which is the one that wants its payout).
            escrow::finalize_creating_token_accounts(&keys, &payer)
        };
        let Signed {
            tx,
            signature,
            blockhash: _,
            last_valid_block_height,
        } = self.sign(&instructions, &keys, &payer, "finalize").await?;
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
            report.finalized = report.finalized.saturating_add(1);
            report.paid_amount = report.paid_amount.saturating_add(payout.provider);
            tracing::info!(
                session = %key,
                paid = payout.provider,
                penalties = account.penalties,
                %signature,
                "session finalized"
            );
        }
        Ok(())
    }
}
