//! The standard `RpcClient` against the served endpoint: the flows the rest of the project uses.

use serde_json::json;
use solana_client::client_error::ClientErrorKind;
use solana_client::rpc_config::{RpcSimulateTransactionConfig, RpcTransactionConfig};
use solana_client::rpc_request::{RpcError, RpcResponseErrorData};
use solana_commitment_config::CommitmentConfig;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::Message;
use solana_pubkey::Pubkey;
use solana_signer::Signer;
use solana_transaction::Transaction;
use solana_transaction_status_client_types::{
    EncodedTransaction, TransactionConfirmationStatus, UiTransactionEncoding,
};
use x402pp_localnet::{
    associated_token_address, create_associated_token_account_idempotent, MEMO, SPL_TOKEN,
    USDC_DECIMALS,
};

use crate::common::{bounded, call, client, funded, localnet};

fn transfer_checked(
    from: &Pubkey,
    mint: &Pubkey,
    to: &Pubkey,
    owner: &Pubkey,
    amount: u64,
) -> Instruction {
    spl_token_2022_interface::instruction::transfer_checked(
        &SPL_TOKEN,
        from,
        mint,
        to,
        owner,
        &[],
        amount,
        USDC_DECIMALS,
    )
    .unwrap()
}

fn memo(text: &str, signer: &Pubkey) -> Instruction {
    Instruction {
        program_id: MEMO,
        accounts: vec![solana_instruction::AccountMeta::new_readonly(*signer, true)],
        data: text.as_bytes().to_vec(),
    }
}

async fn signed(
    client: &solana_client::nonblocking::rpc_client::RpcClient,
    ixs: &[Instruction],
    payer: &Keypair,
    signers: &[&Keypair],
) -> Transaction {
    let blockhash = client.get_latest_blockhash().await.unwrap();
    let mut all = vec![payer];
    all.extend_from_slice(signers);
    Transaction::new(&all, Message::new(ixs, Some(&payer.pubkey())), blockhash)
}

#[tokio::test]
async fn a_client_airdrops_creates_an_ata_mints_and_transfers_checked() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        let mint = localnet.usdc_mint();
        let alice = funded(&client).await;
        let bob = Keypair::new();
        assert_eq!(
            client.get_balance(&alice.pubkey()).await.unwrap(),
            10_000_000_000
        );

        // Alice creates her own ATA and Bob's through the ATA program, over RPC.
        let alice_ata = associated_token_address(&alice.pubkey(), &mint, &SPL_TOKEN);
        let bob_ata = associated_token_address(&bob.pubkey(), &mint, &SPL_TOKEN);
        let tx = signed(
            &client,
            &[
                create_associated_token_account_idempotent(
                    &alice.pubkey(),
                    &alice.pubkey(),
                    &mint,
                    &SPL_TOKEN,
                ),
                create_associated_token_account_idempotent(
                    &alice.pubkey(),
                    &bob.pubkey(),
                    &mint,
                    &SPL_TOKEN,
                ),
            ],
            &alice,
            &[],
        )
        .await;
        client.send_and_confirm_transaction(&tx).await.unwrap();

        localnet.mint_to(&alice.pubkey(), 5_000_000).unwrap();
        let balance = client.get_token_account_balance(&alice_ata).await.unwrap();
        assert_eq!(balance.amount, "5000000");
        assert_eq!(balance.decimals, 6);
        assert_eq!(balance.ui_amount_string, "5");

        let tx = signed(
            &client,
            &[transfer_checked(
                &alice_ata,
                &mint,
                &bob_ata,
                &alice.pubkey(),
                1_250_000,
            )],
            &alice,
            &[],
        )
        .await;
        client.send_and_confirm_transaction(&tx).await.unwrap();
        let bob_balance = client.get_token_account_balance(&bob_ata).await.unwrap();
        assert_eq!(bob_balance.amount, "1250000");
        assert_eq!(bob_balance.ui_amount, Some(1.25));
        let alice_balance = client.get_token_account_balance(&alice_ata).await.unwrap();
        assert_eq!(alice_balance.amount, "3750000");
    })
    .await;
}

#[tokio::test]
async fn accounts_read_back_in_base64_and_json_parsed() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        let owner = Keypair::new().pubkey();
        localnet.mint_to(&owner, 42_000_000).unwrap();
        let mint = localnet.usdc_mint();
        let ata = associated_token_address(&owner, &mint, &SPL_TOKEN);

        // base64 (RpcClient's default) decodes to the raw token account.
        let account = client.get_account(&ata).await.unwrap();
        assert_eq!(account.owner, SPL_TOKEN);
        assert_eq!(account.data.len(), 165);
        assert_eq!(&account.data[..32], mint.as_ref());
        assert_eq!(
            u64::from_le_bytes(account.data[64..72].try_into().unwrap()),
            42_000_000
        );

        // jsonParsed: RpcClient's token account helper parses it.
        let parsed = client.get_token_account(&ata).await.unwrap().unwrap();
        assert_eq!(parsed.mint, mint.to_string());
        assert_eq!(parsed.owner, owner.to_string());
        assert_eq!(parsed.token_amount.amount, "42000000");
        assert_eq!(parsed.token_amount.ui_amount_string, "42");

        // The raw shape, as @solana/kit reads it.
        let raw = call(
            &localnet.rpc_url(),
            "getAccountInfo",
            json!([ata.to_string(), {"encoding": "jsonParsed", "commitment": "confirmed"}]),
        )
        .await;
        let value = &raw["result"]["value"];
        assert_eq!(value["data"]["program"], "spl-token", "{raw}");
        assert_eq!(value["data"]["parsed"]["type"], "account");
        assert_eq!(
            value["data"]["parsed"]["info"]["tokenAmount"]["decimals"],
            6
        );
        assert_eq!(value["space"], 165);
        assert!(raw["result"]["context"]["slot"].as_u64().is_some());
        assert!(raw["result"]["context"]["apiVersion"].is_string());

        // Mints parse too, and missing accounts are null.
        let accounts = client
            .get_multiple_accounts(&[mint, Pubkey::new_unique()])
            .await
            .unwrap();
        let raw = call(
            &localnet.rpc_url(),
            "getMultipleAccounts",
            json!([[mint.to_string()], {"encoding": "base64+zstd"}]),
        )
        .await;
        assert_eq!(raw["result"]["value"][0]["data"][1], "base64+zstd", "{raw}");
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].as_ref().unwrap().data.len(), 82);
        assert!(accounts[1].is_none());
        let raw = call(
            &localnet.rpc_url(),
            "getAccountInfo",
            json!([mint.to_string(), {"encoding": "jsonParsed"}]),
        )
        .await;
        assert_eq!(
            raw["result"]["value"]["data"]["parsed"]["info"]["decimals"],
            6
        );
        assert_eq!(
            raw["result"]["value"]["data"]["parsed"]["info"]["mintAuthority"],
            localnet.info().faucet.to_string()
        );
    })
    .await;
}

#[tokio::test]
async fn simulation_returns_program_logs_and_units_consumed() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        let payer = funded(&client).await;
        let tx = signed(
            &client,
            &[memo("hello localnet", &payer.pubkey())],
            &payer,
            &[],
        )
        .await;
        let result = client
            .simulate_transaction_with_config(
                &tx,
                RpcSimulateTransactionConfig {
                    sig_verify: true,
                    ..RpcSimulateTransactionConfig::default()
                },
            )
            .await
            .unwrap()
            .value;
        assert!(result.err.is_none(), "{result:?}");
        let logs = result.logs.unwrap();
        assert!(
            logs.iter()
                .any(|l| l.contains("Memo (len 14): \"hello localnet\"")),
            "{logs:?}"
        );
        assert!(logs.iter().any(|l| l == &format!("Program {MEMO} success")));
        assert!(result.units_consumed.unwrap() > 0);
        assert_eq!(result.fee, Some(5_000));
        // Simulation changes nothing.
        assert_eq!(
            client.get_balance(&payer.pubkey()).await.unwrap(),
            10_000_000_000
        );
    })
    .await;
}

#[tokio::test]
async fn signature_statuses_and_get_transaction_describe_a_confirmed_transfer() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        let payer = funded(&client).await;
        let to = Pubkey::new_unique();
        let tx = signed(
            &client,
            &[
                solana_system_interface::instruction::transfer(&payer.pubkey(), &to, 1_000_000),
                memo("receipt", &payer.pubkey()),
            ],
            &payer,
            &[],
        )
        .await;
        let signature = client.send_and_confirm_transaction(&tx).await.unwrap();

        let statuses = client
            .get_signature_statuses(&[signature, solana_signature::Signature::default()])
            .await
            .unwrap()
            .value;
        let status = statuses[0].clone().unwrap();
        assert!(status.err.is_none());
        assert_eq!(
            status.confirmation_status,
            Some(TransactionConfirmationStatus::Finalized)
        );
        assert!(statuses[1].is_none());

        let fetched = client
            .get_transaction_with_config(
                &signature,
                RpcTransactionConfig {
                    encoding: Some(UiTransactionEncoding::Base64),
                    commitment: Some(CommitmentConfig::confirmed()),
                    max_supported_transaction_version: Some(0),
                },
            )
            .await
            .unwrap();
        assert_eq!(fetched.slot, status.slot);
        assert!(fetched.block_time.is_some());
        let decoded = fetched.transaction.transaction.decode().unwrap();
        assert_eq!(decoded.signatures[0], signature);
        let meta = fetched.transaction.meta.unwrap();
        assert!(meta.err.is_none());
        assert_eq!(meta.fee, 5_000);
        let pre: Vec<u64> = meta.pre_balances.clone();
        let post: Vec<u64> = meta.post_balances.clone();
        assert_eq!(pre[0], 10_000_000_000);
        assert_eq!(post[0], 10_000_000_000 - 1_000_000 - 5_000);
        assert_eq!(post[1], 1_000_000);
        let logs: Option<Vec<String>> = meta.log_messages.clone().into();
        assert!(logs.unwrap().iter().any(|l| l.contains("\"receipt\"")));
        let units: Option<u64> = meta.compute_units_consumed.clone().into();
        assert!(units.unwrap() > 0);

        // The default (json) encoding, as other clients read it.
        let json_tx = client
            .get_transaction(&signature, UiTransactionEncoding::Json)
            .await
            .unwrap();
        match json_tx.transaction.transaction {
            EncodedTransaction::Json(ui) => {
                assert_eq!(ui.signatures, vec![signature.to_string()]);
            }
            other => panic!("expected json, got {other:?}"),
        }
        assert!(json_tx.transaction.version.is_none());

        // Unknown signatures are null, not errors.
        let raw = call(
            &localnet.rpc_url(),
            "getTransaction",
            json!([solana_signature::Signature::default().to_string(), {"commitment": "confirmed"}]),
        )
        .await;
        assert!(raw["result"].is_null(), "{raw}");
        assert!(raw.get("error").is_none());
    })
    .await;
}

#[tokio::test]
async fn preflight_refuses_a_failing_transaction_with_its_logs() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        let alice = funded(&client).await;
        let mint = localnet.usdc_mint();
        localnet.mint_to(&alice.pubkey(), 100).unwrap();
        let bob = Pubkey::new_unique();
        localnet.mint_to(&bob, 1).unwrap();
        let alice_ata = associated_token_address(&alice.pubkey(), &mint, &SPL_TOKEN);
        let bob_ata = associated_token_address(&bob, &mint, &SPL_TOKEN);
        let tx = signed(
            &client,
            &[transfer_checked(
                &alice_ata,
                &mint,
                &bob_ata,
                &alice.pubkey(),
                1_000,
            )],
            &alice,
            &[],
        )
        .await;
        let error = client.send_and_confirm_transaction(&tx).await.unwrap_err();
        match error.kind() {
            ClientErrorKind::RpcError(RpcError::RpcResponseError {
                code,
                message,
                data: RpcResponseErrorData::SendTransactionPreflightFailure(result),
            }) => {
                assert_eq!(*code, -32002);
                assert!(
                    message.starts_with(
                        "Transaction simulation failed: Error processing Instruction 0"
                    ),
                    "{message}"
                );
                let logs = result.logs.clone().unwrap();
                assert!(
                    logs.iter().any(|l| l.contains("insufficient funds")),
                    "{logs:?}"
                );
                assert!(result.units_consumed.unwrap() > 0);
            }
            other => panic!("expected a preflight failure, got {other:?}"),
        }
        // Nothing was charged: preflight stopped it.
        assert_eq!(
            client.get_balance(&alice.pubkey()).await.unwrap(),
            10_000_000_000
        );

        // With skipPreflight the failure lands on chain, pays its fee and has a status.
        let tx = signed(
            &client,
            &[
                transfer_checked(&alice_ata, &mint, &bob_ata, &alice.pubkey(), 1_000),
                memo("again", &alice.pubkey()),
            ],
            &alice,
            &[],
        )
        .await;
        let signature = client
            .send_transaction_with_config(
                &tx,
                solana_client::rpc_config::RpcSendTransactionConfig {
                    skip_preflight: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let status = client
            .get_signature_statuses(&[signature])
            .await
            .unwrap()
            .value[0]
            .clone()
            .unwrap();
        assert!(status.err.is_some());
        assert_eq!(
            client.get_balance(&alice.pubkey()).await.unwrap(),
            10_000_000_000 - 5_000
        );
    })
    .await;
}

#[tokio::test]
async fn cluster_queries_answer_like_a_validator() {
    bounded(60, async {
        let localnet = localnet().await;
        let client = client(&localnet);
        client.get_health().await.unwrap();
        assert_eq!(client.get_version().await.unwrap().solana_core, "3.1.12");
        let genesis = client.get_genesis_hash().await.unwrap();
        assert_eq!(genesis.to_string(), localnet.info().genesis_hash);
        assert!(localnet.info().network.starts_with("solana:"));
        let rent = client
            .get_minimum_balance_for_rent_exemption(165)
            .await
            .unwrap();
        assert_eq!(rent, 2_039_280);
        let payer = Keypair::new();
        let blockhash = client.get_latest_blockhash().await.unwrap();
        let message = Message::new_with_blockhash(
            &[memo("fee?", &payer.pubkey())],
            Some(&payer.pubkey()),
            &blockhash,
        );
        assert_eq!(client.get_fee_for_message(&message).await.unwrap(), 5_000);
        assert!(client
            .is_blockhash_valid(&blockhash, CommitmentConfig::processed())
            .await
            .unwrap());

        // Slots move on their own, and block height with them.
        let slot = client.get_slot().await.unwrap();
        let height = client.get_block_height().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
        assert!(client.get_slot().await.unwrap() >= slot + 2);
        assert!(client.get_block_height().await.unwrap() >= height + 2);
        let epoch = client.get_epoch_info().await.unwrap();
        assert!(epoch.absolute_slot >= slot + 2);
        assert!(epoch.slots_in_epoch > 0);
    })
    .await;
}

#[tokio::test]
async fn localnet_controls_mint_warp_and_describe_over_rpc() {
    bounded(60, async {
        let localnet = localnet().await;
        let url = localnet.rpc_url();
        let client = client(&localnet);
        let owner = Pubkey::new_unique();

        let minted = call(
            &url,
            "localnet_mintTo",
            json!({"owner": owner.to_string(), "amount": "2500000"}),
        )
        .await;
        let token_account: Pubkey = minted["result"]["tokenAccount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            client.get_token_account_balance(&token_account).await.unwrap().amount,
            "2500000"
        );
        // Token-2022 mint, positional params, numeric amount.
        let minted = call(
            &url,
            "localnet_mintTo",
            json!([{"mint": localnet.usdc_2022_mint().to_string(), "owner": owner.to_string(), "amount": 7}]),
        )
        .await;
        let account_2022: Pubkey = minted["result"]["tokenAccount"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            client.get_account(&account_2022).await.unwrap().owner,
            x402pp_localnet::TOKEN_2022
        );

        let now = localnet.unix_timestamp();
        let warped = call(&url, "localnet_warpClock", json!({"seconds": 3600})).await;
        assert!(warped["result"]["unixTimestamp"].as_i64().unwrap() >= now + 3600, "{warped}");
        assert!(localnet.unix_timestamp() >= now + 3600);
        let back = call(&url, "localnet_warpClock", json!({"unixTimestamp": now})).await;
        assert_eq!(back["error"]["code"], -32602, "{back}");
        let later = localnet.advance_clock(60).unwrap();
        assert!(later >= now + 3660);

        let info = call(&url, "localnet_info", json!([])).await;
        assert_eq!(info["result"]["usdcMint"], localnet.usdc_mint().to_string());
        assert_eq!(info["result"]["faucet"], localnet.info().faucet.to_string());
        assert_eq!(
            info["result"]["programs"]["sessionEscrow"],
            session_escrow::ID.to_string()
        );
        let slot = info["result"]["slot"].as_u64().unwrap();
        let advanced = call(&url, "localnet_advanceSlots", json!({"slots": 5})).await;
        assert!(advanced["result"]["slot"].as_u64().unwrap() >= slot + 5);
    })
    .await;
}
