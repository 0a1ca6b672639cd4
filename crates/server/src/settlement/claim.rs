//! One claim: what the best voucher adds to the provider's settlement, the claim row written
//! before the transaction is sent, the signed transaction, and waiting for its outcome. A claim
//! records the voucher on chain (and the receipt head it commits to); tokens move at `finalize`.

use std::time::Instant;

use solana_sdk::hash::Hash;
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Signature, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_protocol::{Amount, Hash32, Receipt, Voucher};
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::{compute, ChainError};

use super::{pubkey, unclaimed, Outcome, SettleError, SettleReport, Settler};
use crate::ledger::{ClaimExpiry, ClaimStatus, SessionRecord};

/// A transaction signed by the provider, with what crash recovery needs to judge it later.
pub(super) struct Signed {
    pub(super) tx: Transaction,
    pub(super) signature: Signature,
    pub(super) blockhash: Hash,
    pub(super) last_valid_block_height: u64,
}

impl Settler {
    pub(super) async fn claim(
        &self,
        record: &SessionRecord,
        now_unix: i64,
        report: &mut SettleReport,
    ) -> Result<(), SettleError> {
        let address = record.chain.address;
        let Some(voucher) = record.best_voucher else {
            return Ok(());
        };
        let Some((account, token_program)) = self.refresh(&address).await? else {
            tracing::info!(session = %pubkey(&address), "session closed on chain");
            return Ok(());
        };
        if account.provider != self.provider.pubkey() {
            tracing::warn!(session = %pubkey(&address), "session of another provider; not claiming");
            return Ok(());
        }
        if account
            .claim_deadline()
            .map_or(true, |deadline| now_unix > deadline)
        {
            tracing::warn!(session = %pubkey(&address), "claim window closed");
            return Ok(());
        }
        // A metered voucher is claimed with the provider's receipt for it: alone it would settle
        // only its `accepted` (docs/program.md, "Metered sessions").
        let receipt = match voucher.accepted {
            None => None,
            Some(_) => match self.ledger.receipt(&address, voucher.seq).await? {
                Some(stored) => match serde_json::from_str::<Receipt>(&stored.json) {
                    Ok(receipt) => Some(receipt),
                    Err(error) => {
                        tracing::warn!(session = %pubkey(&address), seq = voucher.seq, %error,
                            "the stored receipt does not parse; not claiming");
                        return Ok(());
                    }
                },
                None => {
                    tracing::warn!(session = %pubkey(&address), seq = voucher.seq,
                        "no receipt stored for the best metered voucher; not claiming");
                    return Ok(());
                }
            },
        };
        let proven = receipt
            .as_ref()
            .map_or(voucher.cumulative, |r| r.body.cumulative_charged.0);
        let adds = unclaimed(&account, voucher.seq, proven);
        if adds == 0 {
            tracing::debug!(session = %pubkey(&address), "nothing to claim");
            return Ok(());
        }
        // The voucher of request n commits to receipt n − 1 (zeros for the first request); with
        // its own receipt, the claim anchors receipt n.
        let Some((voucher_head, voucher_count)) =
            self.ledger.voucher_head(&address, voucher.seq).await?
        else {
            tracing::warn!(
                session = %pubkey(&address),
                seq = voucher.seq,
                "no receipt stored before the best voucher; not claiming"
            );
            return Ok(());
        };

        let key = Pubkey::new_from_array(address);
        let keys = SessionKeys::of(key, &account, token_program);
        let signed = Voucher {
            session: x402pp_protocol::Pubkey(address),
            opened_slot: account.opened_slot,
            seq: voucher.seq,
            cumulative: Amount(voucher.cumulative),
            accepted: voucher.accepted.map(Amount),
            receipt_head: Hash32(voucher_head),
            signature: x402pp_protocol::Signature(voucher.signature),
        };
        let payer = self.provider.pubkey();
        let (instructions, receipts_head, receipt_count) = match &receipt {
            None => (
                escrow::claim(&keys, &signed, &account.voucher_signer).to_vec(),
                voucher_head,
                voucher_count,
            ),
            Some(receipt) => (
                escrow::claim_with_receipt(&keys, &signed, &account.voucher_signer, receipt)
                    .to_vec(),
                receipt.receipt_id.0,
                voucher.seq,
            ),
        };
        let Signed {
            tx,
            signature,
            blockhash,
            last_valid_block_height,
        } = self.sign(&instructions, &keys, &payer, "claim").await?;

        // The claim is durable before it leaves: a crash from here on is resolved by signature.
        let claim_id = self
            .ledger
            .begin_claim_expiring(
                &address,
                &voucher,
                receipts_head,
                receipt_count,
                &signature.to_string(),
                Some(&ClaimExpiry {
                    blockhash: blockhash.to_string(),
                    last_valid_block_height,
                }),
            )
            .await?;
        tracing::info!(
            session = %key,
            seq = voucher.seq,
            adds,
            %signature,
            "claiming"
        );
        if let Err(error) = self.rpc.send_transaction(&tx).await {
            let error = ChainError::rpc(error);
            if error.is_transient() {
                // It may or may not have reached the cluster: stays Pending, resolved later.
                return Err(error.into());
            }
            // Refused before it was forwarded (preflight): nothing can land.
            self.ledger
                .finish_claim(claim_id, ClaimStatus::Failed)
                .await?;
            report.claims_failed = report.claims_failed.saturating_add(1);
            tracing::warn!(session = %key, %error, "claim refused");
            return Ok(());
        }
        match self
            .await_outcome(&signature, last_valid_block_height)
            .await?
        {
            Outcome::Confirmed => {
                self.ledger
                    .finish_claim(claim_id, ClaimStatus::Confirmed)
                    .await?;
                let earned_after = self
                    .refresh(&address)
                    .await?
                    .map_or(account.earned().saturating_add(adds), |(a, _)| a.earned());
                let added = earned_after.saturating_sub(account.earned());
                report.claims_confirmed = report.claims_confirmed.saturating_add(1);
                report.claimed_amount = report.claimed_amount.saturating_add(added);
                tracing::info!(session = %key, added, %signature, "claim confirmed");
            }
            Outcome::Failed => {
                self.ledger
                    .finish_claim(claim_id, ClaimStatus::Failed)
                    .await?;
                report.claims_failed = report.claims_failed.saturating_add(1);
                tracing::warn!(session = %key, %signature, "claim failed on chain");
            }
            Outcome::Unknown => {
                report.pending = report.pending.saturating_add(1);
                tracing::warn!(session = %key, %signature, "claim not confirmed yet; left pending");
            }
        }
        Ok(())
    }

    /// Signs `instructions` on `session`, after their compute budget, with the provider (fee
    /// payer `payer`) on a fresh blockhash.
    pub(super) async fn sign(
        &self,
        instructions: &[Instruction],
        session: &SessionKeys,
        payer: &Pubkey,
        what: &str,
    ) -> Result<Signed, SettleError> {
        let (blockhash, last_valid_block_height) = self
            .rpc
            .get_latest_blockhash_with_commitment(self.rpc.commitment())
            .await
            .map_err(ChainError::rpc)?;
        let instructions =
            compute::with_compute_budget(instructions, session, self.config.compute_unit_price);
        let tx = Transaction::new_signed_with_payer(
            &instructions,
            Some(payer),
            &[self.provider.as_ref()],
            blockhash,
        );
        let Some(signature) = tx.signatures.first().copied() else {
            return Err(
                ChainError::Build(format!("the {what} transaction has no signature")).into(),
            );
        };
        Ok(Signed {
            tx,
            signature,
            blockhash,
            last_valid_block_height,
        })
    }

    /// Waits for a sent transaction: Confirmed, Failed (on chain, or its blockhash expired
    /// without it landing), or Unknown after [`SettlerConfig::confirm_timeout`].
    pub(super) async fn await_outcome(
        &self,
        signature: &Signature,
        last_valid_block_height: u64,
    ) -> Result<Outcome, SettleError> {
        let start = Instant::now();
        loop {
            match self.status(signature, false).await? {
                Outcome::Unknown => {}
                known => return Ok(known),
            }
            let height = self.rpc.get_block_height().await.map_err(ChainError::rpc)?;
            if height > last_valid_block_height {
                return Ok(match self.status(signature, true).await? {
                    Outcome::Unknown => Outcome::Failed,
                    known => known,
                });
            }
            if start.elapsed() >= self.config.confirm_timeout {
                return Ok(Outcome::Unknown);
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}
