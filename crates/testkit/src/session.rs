//! Sessions opened by hand (no `Agent`), for tests that send vouchers of their own making.

use anyhow::{ensure, Context as _};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::{headers, Amount, Hash32, Id16, Intent, Offer, Voucher, VoucherTerms};
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::keys::signing_key;
use x402pp_solana::token;

use crate::World;

/// A session opened on chain by [`World::open_session`].
pub struct RawSession {
    /// The agent's wallet (funded, paid the deposit).
    pub wallet: Keypair,
    /// The session's voucher key.
    pub voucher_key: Keypair,
    /// The session's accounts (with its `opened_slot`, read back after the open).
    pub keys: SessionKeys,
    /// The session's address.
    pub session: Pubkey,
    /// The offer it was opened on.
    pub offer: Offer,
}

impl RawSession {
    /// Voucher `seq` for `cumulative`, committing to the receipt head `receipt_head` (the hash
    /// of receipt `seq − 1`, [`Hash32::ZERO`] for the first), on this session's incarnation,
    /// signed with the session's voucher key.
    pub fn voucher(&self, seq: u64, cumulative: u64, receipt_head: Hash32) -> Voucher {
        Voucher::sign(
            VoucherTerms {
                session: x402pp_protocol::Pubkey(self.session.to_bytes()),
                opened_slot: self.keys.opened_slot,
                seq,
                cumulative: Amount(cumulative),
                receipt_head,
            },
            &signing_key(&self.voucher_key),
        )
    }
}

impl World {
    /// The signed offer of the provider's paid route `path` (from an unpaid `POST`'s 402).
    pub async fn offer(&self, path: &str) -> anyhow::Result<Offer> {
        self.offer_for_intent(path, None).await
    }

    /// The signed offer the 402 of an unpaid `POST` to `path` carries, stating `intent` if any
    /// (`X-402-Intent`); not verified here.
    pub async fn offer_for_intent(
        &self,
        path: &str,
        intent: Option<&Intent>,
    ) -> anyhow::Result<Offer> {
        let mut request = self.http.post(format!("{}{path}", self.url()));
        if let Some(intent) = intent {
            request = request.header(headers::X402_INTENT, headers::encode(intent)?);
        }
        let response = request.send().await?;
        ensure!(
            response.status() == 402,
            "{path} answered {} to an unpaid request",
            response.status()
        );
        let header = response
            .headers()
            .get(headers::X402_OFFER)
            .context("no X-402-Offer answered")?;
        Ok(headers::decode(headers::X402_OFFER, header.as_bytes())?)
    }

    /// A new funded wallet opens a session with `deposit` on the offer of `path` (one
    /// transaction, a fresh voucher key, a random nonce).
    pub async fn open_session(&self, path: &str, deposit: u64) -> anyhow::Result<RawSession> {
        let offer = self.offer(path).await?;
        self.open_session_on(offer, deposit).await
    }

    /// A new funded wallet opens a session with `deposit` on `offer` (one transaction, a fresh
    /// voucher key, a random nonce): an offer answering an intent, or one the test signed.
    pub async fn open_session_on(&self, offer: Offer, deposit: u64) -> anyhow::Result<RawSession> {
        let wallet = Keypair::new();
        self.fund(
            &wallet.pubkey(),
            self.agent_defaults.lamports,
            self.agent_defaults.tokens,
        )?;
        let nonce = u64::from_le_bytes(Id16::random().0[..8].try_into()?);
        let keys = SessionKeys::new(
            wallet.pubkey(),
            self.provider_key().pubkey(),
            nonce,
            self.localnet.usdc_mint(),
            token::TOKEN_PROGRAM_ID,
        );
        let voucher_key = Keypair::new();
        let open = escrow::open_session(&keys, &offer, nonce, deposit, voucher_key.pubkey())?;
        self.send(&open, &wallet).await?;
        let account = escrow::fetch_session(&self.rpc, &keys.session)
            .await?
            .context("the opened session has no account")?;
        let keys = SessionKeys::of(keys.session, &account, token::TOKEN_PROGRAM_ID);
        Ok(RawSession {
            wallet,
            voucher_key,
            session: keys.session,
            keys,
            offer,
        })
    }
}
