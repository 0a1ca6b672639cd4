//! Transactions the agent signs: budgeted, priced, sent and counted.

use super::*;

impl Agent {
    /// Signs and sends a transaction on `session` with the wallet, waits for confirmation, and
    /// counts it and its fee.
    pub(super) async fn send_transaction(
        &self,
        instructions: &[Instruction],
        session: &SessionKeys,
    ) -> Result<Signature, ClientError> {
        let (transaction, fee) = self.prepare_transaction(instructions, session).await?;
        self.submit_transaction(&transaction, fee).await
    }

    /// Signs a transaction on `session` with the wallet on a recent blockhash, with its compute
    /// budget (`x402pp_solana::compute`) and its expected fee. Nothing is sent.
    pub(super) async fn prepare_transaction(
        &self,
        instructions: &[Instruction],
        session: &SessionKeys,
    ) -> Result<(Transaction, u64), ClientError> {
        let wallet = &*self.inner.config.keypair;
        let rpc = &self.inner.rpc;
        let instructions = &compute::with_compute_budget(
            instructions,
            session,
            self.inner.config.compute_unit_price,
        );
        let blockhash = rpc.get_latest_blockhash().await.map_err(ChainError::rpc)?;
        let mut transaction = Transaction::new_signed_with_payer(
            instructions,
            Some(&wallet.pubkey()),
            &[wallet],
            blockhash,
        );
        // The same instructions under the same blockhash are the same transaction (two equal
        // top-ups in a row): the cluster would drop the second as already processed.
        if lock(&self.inner.recent_signatures).contains(&transaction.signatures[0]) {
            let fresh = rpc
                .get_new_latest_blockhash(&blockhash)
                .await
                .map_err(ChainError::rpc)?;
            transaction = Transaction::new_signed_with_payer(
                instructions,
                Some(&wallet.pubkey()),
                &[wallet],
                fresh,
            );
        }
        let signatures = u64::try_from(transaction.signatures.len()).unwrap_or(1);
        let fee = match rpc.get_fee_for_message(&transaction.message).await {
            Ok(fee) => fee,
            Err(_) => FALLBACK_LAMPORTS_PER_SIGNATURE.saturating_mul(signatures),
        };
        Ok((transaction, fee))
    }

    /// Sends a prepared transaction, waits for confirmation, and counts it and its fee. On an
    /// error it may still land.
    pub(super) async fn submit_transaction(
        &self,
        transaction: &Transaction,
        fee: u64,
    ) -> Result<Signature, ClientError> {
        let signature = self
            .inner
            .rpc
            .send_and_confirm_transaction(transaction)
            .await
            .map_err(ChainError::rpc)?;
        {
            let mut recent = lock(&self.inner.recent_signatures);
            if recent.len() >= RECENT_SIGNATURES {
                recent.pop_front();
            }
            recent.push_back(signature);
        }
        bump(&self.inner.stats.transactions, 1);
        bump(&self.inner.stats.fees_lamports, fee);
        Ok(signature)
    }
}
