//! Handing a session over to a tool that drives it itself (a load generator: `x402pp load`): the
//! agent gives up the session (it signs no further voucher on it) and returns what paying its
//! next requests takes — its address and incarnation, the voucher key, the price, the deposit
//! and where its requests stand.
//!
//! Not for applications: whoever holds a [`SessionHandover`] pays with the session's deposit and
//! is on its own (no receipt verification, top-ups, disputes, store). The agent marks the session
//! [`AgentSessionState::Abandoned`], so it can never sign a voucher conflicting with the new
//! holder's; its next request to the route goes through a 402 and opens another session.

use super::session::OPEN_IN_DOUBT;
use super::*;

/// A session handed over by [`Agent::hand_over_session`]: enough to pay its next requests
/// without the agent. `Debug` leaves the voucher key out.
#[derive(Clone)]
pub struct SessionHandover {
    /// The session account (`X-402-Session-Id`, base58).
    pub session: Pubkey,
    /// The session's incarnation, which every voucher signs.
    pub opened_slot: u64,
    /// The session's voucher signer (registered on chain at open).
    pub voucher_key: SigningKey,
    /// Price per request, atomic units.
    pub price: u64,
    /// The deposit as last read from the chain: vouchers may authorise up to it in total.
    pub deposit: u64,
    /// Where the session's requests stand (the session core's state): the next voucher is
    /// [`Progress::next_voucher`]; move it with [`Progress::record`] once a receipt is in.
    pub progress: Progress,
}

impl std::fmt::Debug for SessionHandover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandover")
            .field("session", &self.session)
            .field("opened_slot", &self.opened_slot)
            .field("price", &self.price)
            .field("deposit", &self.deposit)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl SessionHandover {
    /// Signs the voucher of the next request: seq and cumulative from [`Self::progress`] and
    /// [`Self::price`], committing to the last receipt recorded there. It fails when the
    /// deposit does not cover it ([`ClientError::BudgetExceeded`]: the holder cannot top up).
    pub fn sign_next_voucher(&self) -> Result<Voucher, ClientError> {
        let next = self
            .progress
            .next_voucher(self.price)
            .map_err(|e| ClientError::BudgetExceeded(e.to_string()))?;
        Progress::check_cover(next.cumulative, self.deposit)
            .map_err(|e| ClientError::BudgetExceeded(e.to_string()))?;
        Ok(Voucher::sign(
            VoucherTerms {
                session: proto_key(&self.session),
                opened_slot: self.opened_slot,
                seq: next.seq,
                cumulative: Amount(next.cumulative),
                receipt_head: next.receipt_head,
            },
            &self.voucher_key,
        ))
    }
}

impl Agent {
    /// Gives up `session` and returns what paying its next requests takes, for a tool that
    /// drives the session itself (a load generator); `None` when the agent does not know the
    /// session or it is not open (closing, closed, abandoned, or its open still in doubt), or it
    /// is metered (its vouchers are not the fixed-price ones a handover signs) or owes a cut
    /// stream's receipt.
    ///
    /// Waits for the session's request in flight, if any. The agent then marks the session
    /// [`AgentSessionState::Abandoned`] (stored as such) and forgets its routes: it never signs
    /// another voucher on it, so it cannot conflict with the holder's.
    pub async fn hand_over_session(&self, session: &Pubkey) -> Option<SessionHandover> {
        let handle = self.find(session)?;
        let _turn = handle.turn.lock().await;
        let handover = {
            let mut data = lock(&handle.data);
            // A metered session's vouchers carry a hold and the receipts' total, which a
            // handover's fixed-price vouchers do not: not handed over.
            if data.state != AgentSessionState::Open
                || handle.keys.opened_slot == OPEN_IN_DOUBT
                || handle.offer.terms.metering.is_some()
                || data.pending.is_some()
            {
                return None;
            }
            data.state = AgentSessionState::Abandoned;
            SessionHandover {
                session: handle.address(),
                opened_slot: handle.keys.opened_slot,
                voucher_key: handle.voucher_key.clone(),
                price: handle.price(),
                deposit: data.deposit,
                progress: data.progress,
            }
        };
        lock(&self.inner.routes).retain(|_, a| *a != handle.address());
        self.persist(&handle);
        tracing::info!(session = %handle.address(), "session handed over");
        Some(handover)
    }
}
