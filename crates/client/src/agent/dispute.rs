//! Disputes: a breach receipt sent to the escrow program, automatically or on demand.

use super::*;

impl Agent {
    pub(super) async fn after_breach(&self, session: &SessionHandle, breach: Option<u64>) {
        let Some(seq) = breach else { return };
        if self.inner.config.dispute_policy != DisputePolicy::Automatic {
            return;
        }
        if let Err(e) = self.dispute_one(session, seq).await {
            tracing::warn!(session = %session.address(), seq, error = %e, "automatic dispute failed; dispute_breaches() retries");
        }
    }

    pub(super) async fn dispute_one(
        &self,
        session: &SessionHandle,
        seq: u64,
    ) -> Result<DisputeOutcome, ClientError> {
        let receipt = lock(&session.data)
            .receipts
            .iter()
            .find(|r| r.body.request_number == seq)
            .cloned()
            .ok_or(ClientError::NoSuchReceipt(seq))?;
        let dispute_address =
            escrow::dispute_address(&session.address(), session.keys.opened_slot, seq);
        // The dispute record is created: the wallet pays its rent, or the sponsor does (it
        // stays with the record, as evidence).
        // A neutral dispute sponsor first: the provider's need not pay for a dispute against it.
        let offered = self
            .inner
            .config
            .dispute_sponsor
            .as_ref()
            .or(session.sponsor.as_ref());
        let sponsor = self
            .sponsor_to_use(offered, &[escrow::DISPUTE_ACCOUNT_SPACE])
            .await;
        let payer = sponsor
            .as_ref()
            .map_or(session.keys.agent, |s| sol_key(&s.fee_payer));
        let instructions = escrow::dispute(&session.keys, &receipt, &payer);
        let signature = self
            .send_via(&instructions, &session.keys, sponsor.as_ref())
            .await?;
        let paid = escrow::fetch_dispute(&self.inner.rpc, &dispute_address)
            .await?
            .map(|d| d.latency_penalty)
            .unwrap_or(0);
        {
            let mut data = lock(&session.data);
            if let Some(breach) = data.breaches.iter_mut().find(|b| b.seq == seq) {
                breach.disputed = true;
                breach.paid = paid;
                breach.dispute_signature = Some(signature.to_string());
            }
        }
        // The penalty is recorded on chain (paid back at settlement): re-read the books.
        if let Err(e) = self.refresh(session).await {
            tracing::warn!(error = %e, "cannot refresh the session after a dispute");
        }
        self.persist(session);
        bump(&self.inner.stats.disputes, 1);
        bump(&self.inner.stats.penalties_refunded, paid);
        tracing::info!(session = %session.address(), seq, paid, %signature, "breach disputed");
        Ok(DisputeOutcome {
            session: session.address(),
            seq,
            signature,
            paid,
        })
    }

    /// Disputes every breach receipt not yet disputed, on every session that still exists on
    /// chain; a breach already recorded on chain (e.g. before a restart) is marked without a
    /// new transaction and not returned. A dispute that fails is logged and the others are still
    /// sent; the first error is returned only when none succeeded.
    pub async fn dispute_breaches(&self) -> Result<Vec<DisputeOutcome>, ClientError> {
        let sessions: Vec<_> = lock(&self.inner.sessions).clone();
        let mut outcomes = Vec::new();
        let mut failed = None;
        for session in sessions {
            let pending: Vec<u64> = {
                let data = lock(&session.data);
                if matches!(data.state, AgentSessionState::Closed) {
                    continue;
                }
                data.breaches
                    .iter()
                    .filter(|b| !b.disputed)
                    .map(|b| b.seq)
                    .collect()
            };
            for seq in pending {
                let address =
                    escrow::dispute_address(&session.address(), session.keys.opened_slot, seq);
                if let Some(existing) = escrow::fetch_dispute(&self.inner.rpc, &address).await? {
                    let mut data = lock(&session.data);
                    if let Some(breach) = data.breaches.iter_mut().find(|b| b.seq == seq) {
                        breach.disputed = true;
                        breach.paid = existing.latency_penalty;
                    }
                    continue;
                }
                // One failing dispute (a session finalized meanwhile, a transient RPC error)
                // must not keep the others from being sent before their windows close.
                match self.dispute_one(&session, seq).await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(error) => {
                        tracing::warn!(session = %session.address(), seq, %error, "dispute failed; the others go on");
                        failed.get_or_insert(error);
                    }
                }
            }
            self.persist(&session);
        }
        match failed {
            Some(error) if outcomes.is_empty() => Err(error),
            _ => Ok(outcomes),
        }
    }
}
