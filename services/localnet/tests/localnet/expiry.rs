//! Blockhashes expire after 150 slots, as on a cluster.

use solana_commitment_config::CommitmentConfig;
use solana_message::Message;
use solana_pubkey::Pubkey;
use solana_signer::Signer;
use solana_transaction::Transaction;

use crate::common::{bounded, client, funded, manual_localnet};

#[tokio::test]
async fn a_blockhash_expires_after_150_slots_and_the_rpc_says_so() {
    bounded(90, async {
        let localnet = manual_localnet().await;
        let client = client(&localnet);
        let payer = funded(&client).await;
        let (old, last_valid_block_height) = client
            .get_latest_blockhash_with_commitment(CommitmentConfig::confirmed())
            .await
            .unwrap();
        let transfer = |blockhash| {
            Transaction::new(
                &[&payer],
                Message::new(
                    &[solana_system_interface::instruction::transfer(
                        &payer.pubkey(),
                        &Pubkey::new_unique(),
                        1_000_000,
                    )],
                    Some(&payer.pubkey()),
                ),
                blockhash,
            )
        };

        // 100 slots later the blockhash still lands.
        localnet.advance_slots(100);
        assert!(client
            .is_blockhash_valid(&old, CommitmentConfig::processed())
            .await
            .unwrap());
        client
            .send_and_confirm_transaction(&transfer(old))
            .await
            .unwrap();

        // At its last valid block height it is still valid; one slot later it is not.
        let height = client.get_block_height().await.unwrap();
        localnet.advance_slots(last_valid_block_height - height);
        assert_eq!(
            client.get_block_height().await.unwrap(),
            last_valid_block_height
        );
        assert!(client
            .is_blockhash_valid(&old, CommitmentConfig::processed())
            .await
            .unwrap());
        localnet.advance_slots(1);
        assert!(!client
            .is_blockhash_valid(&old, CommitmentConfig::processed())
            .await
            .unwrap());

        let error = client.send_transaction(&transfer(old)).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("Transaction simulation failed: Blockhash not found"),
            "{text}"
        );
        // A fresh blockhash works again.
        let fresh = client.get_latest_blockhash().await.unwrap();
        client
            .send_and_confirm_transaction(&transfer(fresh))
            .await
            .unwrap();
    })
    .await;
}
