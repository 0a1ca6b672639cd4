//! Metered sessions by hand (no `Agent`): the agent's side of a v3 session — raw vouchers
//! stating `accepted` and a hold, each receipt verified and chained as the agent does — and the
//! receipt block that ends a streamed answer (docs/protocol.md, "Metered sessions").

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::{
    headers, Amount, ErrorBody, ErrorCode, Receipt, ReceiptChain, Voucher, VoucherTerms,
};
use x402pp_solana::keys::signing_key;

use crate::{RawSession, World};

/// How long [`World::recover_receipt`] resends a voucher for its stored receipt.
pub const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent's side of a metered session opened by [`World::open_metered_session`]: the next
/// voucher's `seq`, the receipts' total it accepted, and the receipt chain.
pub struct MeteredSession {
    /// The session on chain.
    pub raw: RawSession,
    /// `seq` of the last receipt accepted.
    pub seq: u64,
    /// The `cumulativeCharged` of the last receipt accepted (the next voucher's `accepted`).
    pub accepted: u64,
    /// The receipts accepted, chained.
    pub chain: ReceiptChain,
}

impl MeteredSession {
    /// Tracks `raw`, whose offer must be a metered (v3) one.
    pub fn new(raw: RawSession) -> anyhow::Result<Self> {
        let signed = raw
            .offer
            .verify_any()
            .context("the offer does not verify")?;
        ensure!(
            signed.metering().is_some(),
            "the session's offer is not metered"
        );
        Ok(Self {
            chain: ReceiptChain::new(x402pp_protocol::Pubkey(raw.session.to_bytes())),
            raw,
            seq: 0,
            accepted: 0,
        })
    }

    /// The session's address.
    pub fn session(&self) -> Pubkey {
        self.raw.session
    }

    /// The next voucher: `accepted` the last receipt's total, `hold` on top.
    pub fn voucher(&self, hold: u64) -> Voucher {
        self.voucher_accepting(self.accepted, hold)
    }

    /// The next voucher stating `accepted` (whatever the receipts say), `hold` on top.
    pub fn voucher_accepting(&self, accepted: u64, hold: u64) -> Voucher {
        Voucher::sign_metered(
            VoucherTerms {
                session: x402pp_protocol::Pubkey(self.raw.session.to_bytes()),
                opened_slot: self.raw.keys.opened_slot,
                seq: self.seq.saturating_add(1),
                cumulative: Amount(accepted.saturating_add(hold)),
                receipt_head: self.chain.head,
            },
            Amount(accepted),
            &signing_key(&self.raw.voucher_key),
        )
    }

    /// Takes `receipt` for `voucher` as the agent does: it verifies under the offer's provider,
    /// answers the voucher's seq, charges `expected` on top of the accepted total, never more
    /// than the voucher's hold, and continues the chain.
    pub fn accept(
        &mut self,
        voucher: &Voucher,
        receipt: &Receipt,
        expected: u64,
    ) -> anyhow::Result<()> {
        let message = receipt
            .verify_any(&self.raw.offer.terms.provider)
            .context("the receipt does not verify")?;
        let body = &receipt.body;
        ensure!(
            body.request_number == voucher.seq,
            "receipt #{} for voucher #{}",
            body.request_number,
            voucher.seq
        );
        ensure!(
            body.amount_charged == Amount(expected),
            "charged {} instead of {expected}: {receipt:?}",
            body.amount_charged.get()
        );
        ensure!(
            voucher.hold().is_some_and(|hold| expected <= hold),
            "charged {expected}, over the voucher's hold {:?}",
            voucher.hold()
        );
        ensure!(
            body.cumulative_charged.get() == self.accepted.saturating_add(expected),
            "cumulative {} is not {} + {expected}",
            body.cumulative_charged.get(),
            self.accepted
        );
        self.chain.append(&message).context("the receipt chain")?;
        self.seq = voucher.seq;
        self.accepted = self.accepted.saturating_add(expected);
        Ok(())
    }
}

impl World {
    /// A new funded wallet opens a session with `deposit` on the metered offer of `path`.
    pub async fn open_metered_session(
        &self,
        path: &str,
        deposit: u64,
    ) -> anyhow::Result<MeteredSession> {
        MeteredSession::new(self.open_session(path, deposit).await?)
    }

    /// `POST {provider}{path}` paid with `voucher` on `session` (no body yet).
    pub fn paid(&self, path: &str, session: &Pubkey, voucher: &Voucher) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}{path}", self.url()))
            .header(headers::X402_SESSION_ID, session.to_string());
        match headers::encode(voucher) {
            Ok(value) => request.header(headers::X402_VOUCHER, value),
            // A voucher always encodes; a request without one is refused, visibly.
            Err(_) => request,
        }
    }

    /// [`World::paid`] asking for a streamed answer with its receipt as a final SSE event
    /// (`X-402-Receipt-Mode: sse-event`).
    pub fn paid_streamed(
        &self,
        path: &str,
        session: &Pubkey,
        voucher: &Voucher,
    ) -> reqwest::RequestBuilder {
        self.paid(path, session, voucher)
            .header(headers::X402_RECEIPT_MODE, headers::RECEIPT_MODE_SSE_EVENT)
    }

    /// Resends `voucher` (empty body) until the provider answers its stored receipt (`409` with
    /// `X-402-Receipt`), waiting out `request_in_flight` while it is being stored, for at most
    /// [`RECOVER_TIMEOUT`]: how an agent gets the receipt of a stream it cut.
    pub async fn recover_receipt(
        &self,
        path: &str,
        session: &Pubkey,
        voucher: &Voucher,
    ) -> anyhow::Result<Receipt> {
        let deadline = Instant::now()
            .checked_add(RECOVER_TIMEOUT)
            .context("deadline")?;
        loop {
            let response = self.paid(path, session, voucher).send().await?;
            ensure!(
                response.status() == 409,
                "a resent voucher was answered {}",
                response.status()
            );
            if response.headers().get(headers::X402_RECEIPT).is_some() {
                return receipt_header(&response);
            }
            let body: ErrorBody = response.json().await?;
            ensure!(
                body.error == ErrorCode::RequestInFlight,
                "a resent voucher was refused: {body:?}"
            );
            if Instant::now() >= deadline {
                bail!("no receipt within {RECOVER_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The receipt in a response's `X-402-Receipt` header.
pub fn receipt_header(response: &reqwest::Response) -> anyhow::Result<Receipt> {
    let value = response
        .headers()
        .get(headers::X402_RECEIPT)
        .context("no X-402-Receipt")?;
    Ok(headers::decode(headers::X402_RECEIPT, value.as_bytes())?)
}

/// A streamed answer's bytes split into the handler's (what the receipt's output hash covers)
/// and the receipt of the final `x402-receipt` event, which only the `x402-session-status`
/// event may follow.
pub fn split_receipt_block(bytes: &[u8]) -> anyhow::Result<(&[u8], Receipt)> {
    const MARKER: &[u8] = b"\n\nevent: x402-receipt\ndata: ";
    const STATUS: &str = "\n\nevent: x402-session-status\ndata: ";
    let at = bytes
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
        .context("the stream does not end with the receipt event")?;
    let (answer, block) = bytes.split_at(at);
    let rest = block.get(MARKER.len()..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .context("the receipt event does not end")?;
    let (value, tail) = rest.split_at(end);
    let receipt = headers::decode(headers::X402_RECEIPT, value)?;
    let tail = std::str::from_utf8(tail)?;
    ensure!(
        tail.starts_with(STATUS)
            && tail.ends_with("\n\n")
            && !tail[STATUS.len()..].contains("event:"),
        "only the status event may follow the receipt: {tail:?}"
    );
    Ok((answer, receipt))
}
