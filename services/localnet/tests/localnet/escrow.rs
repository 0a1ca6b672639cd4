//! The escrow program through the real RPC path: an Ed25519 precompile instruction followed by
//! `open_session`, built the way the program's own test harness builds it.

use anchor_lang::{InstructionData, ToAccountMetas};
use session_escrow::instructions::{OfferTerms, OpenSessionArgs};
use session_escrow::messages::OfferMessage;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::Message;
use solana_pubkey::Pubkey;
use solana_signer::Signer;
use solana_transaction::Transaction;
use x402pp_localnet::{
    associated_token_address, EscrowRuntime, Localnet, LocalnetConfig, SPL_TOKEN,
};

use crate::common::{bounded, client, funded, localnet};

/// The canonical Ed25519SigVerify data: header ‖ pubkey ‖ signature ‖ message, all instruction
/// indexes u16::MAX (pubkey at 16, signature at 48, message at 112).
fn ed25519_instruction(signer: &Keypair, message: &[u8]) -> Instruction {
    let signature = signer.sign_message(message);
    let mut data = vec![1u8, 0];
    for v in [
        48u16,
        u16::MAX,
        16,
        u16::MAX,
        112,
        u16::try_from(message.len()).unwrap(),
        u16::MAX,
    ] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(signer.pubkey().as_ref());
    data.extend_from_slice(signature.as_ref());
    data.extend_from_slice(message);
    Instruction {
        program_id: solana_sdk_ids::ed25519_program::ID,
        accounts: vec![],
        data,
    }
}

#[tokio::test]
async fn an_escrow_session_opens_through_the_rpc() {
    bounded(90, async {
        let localnet = localnet().await;
        opens_a_session(&localnet).await;
    })
    .await;
}

/// With `X402PP_ESCROW_SO` set (CI sets it), the same on the SBF build: deployed under the
/// upgradeable loader and run by the real BPF loader, which meters it.
#[tokio::test]
async fn the_escrow_runs_from_an_sbf_build_on_the_real_loader() {
    let Some(so) = std::env::var_os("X402PP_ESCROW_SO") else {
        eprintln!("skipped: X402PP_ESCROW_SO is not set");
        return;
    };
    bounded(90, async {
        let localnet = Localnet::start(LocalnetConfig {
            program_so: Some(so.into()),
            ..LocalnetConfig::ephemeral()
        })
        .await
        .unwrap();
        assert!(matches!(
            localnet.info().escrow_runtime,
            EscrowRuntime::Sbf { bytes, .. } if bytes > 0
        ));
        let program = client(&localnet)
            .get_account(&session_escrow::ID)
            .await
            .unwrap();
        assert!(program.executable);
        assert_eq!(program.owner, solana_sdk_ids::bpf_loader_upgradeable::ID);
        let logs = opens_a_session(&localnet).await;
        // Only the BPF loader meters a program and logs what it consumed.
        let consumed = format!("Program {} consumed ", session_escrow::ID);
        assert!(logs.iter().any(|l| l.starts_with(&consumed)), "{logs:#?}");
    })
    .await;
}

#[tokio::test]
async fn a_program_file_that_is_missing_or_not_an_elf_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("not_a_program.so");
    std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
    for (path, expected) in [
        (dir.path().join("missing.so"), "cannot read the program"),
        (not_elf, "is not an SBF program"),
    ] {
        let error = Localnet::start(LocalnetConfig {
            program_so: Some(path),
            ..LocalnetConfig::ephemeral()
        })
        .await
        .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
}

/// Opens a session through the RPC, checks the balances and that a tampered offer signature is
/// refused, and returns the open transaction's logs.
async fn opens_a_session(localnet: &Localnet) -> Vec<String> {
    {
        let client = client(localnet);
        let agent = funded(&client).await;
        let provider = Keypair::new();
        let mint = localnet.usdc_mint();
        localnet.mint_to(&agent.pubkey(), 1_000_000).unwrap();
        let agent_token = associated_token_address(&agent.pubkey(), &mint, &SPL_TOKEN);

        let offer = OfferMessage {
            provider: provider.pubkey().to_bytes(),
            mint: mint.to_bytes(),
            price_per_request: 1_000,
            min_deposit: 10_000,
            session_ttl_secs: 3_600,
            grace_secs: 600,
            max_latency_ms: 250,
            max_input_bytes: 64 * 1024,
            latency_penalty_bps: 5_000,
            expires_at: localnet.unix_timestamp() + 300,
            offer_id: [7; 16],
            resource_hash: [9; 32],
        };
        let nonce = 1u64;
        let (session, _) = Pubkey::find_program_address(
            &[
                b"session",
                agent.pubkey().as_ref(),
                provider.pubkey().as_ref(),
                &nonce.to_le_bytes(),
            ],
            &session_escrow::ID,
        );
        let (vault, _) =
            Pubkey::find_program_address(&[b"vault", session.as_ref()], &session_escrow::ID);
        let accounts = session_escrow::accounts::OpenSession {
            agent: agent.pubkey(),
            payer: agent.pubkey(),
            provider: provider.pubkey(),
            mint,
            session,
            vault,
            agent_token,
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
            token_program: SPL_TOKEN,
            system_program: solana_sdk_ids::system_program::ID,
        };
        let args = OpenSessionArgs {
            nonce,
            deposit: 50_000,
            voucher_signer: agent.pubkey(),
            terms: OfferTerms {
                price_per_request: offer.price_per_request,
                min_deposit: offer.min_deposit,
                session_ttl_secs: offer.session_ttl_secs,
                grace_secs: offer.grace_secs,
                max_latency_ms: offer.max_latency_ms,
                max_input_bytes: offer.max_input_bytes,
                latency_penalty_bps: offer.latency_penalty_bps,
                expires_at: offer.expires_at,
                offer_id: offer.offer_id,
                resource_hash: offer.resource_hash,
                metering: None,
            },
        };
        let open = Instruction {
            program_id: session_escrow::ID,
            accounts: accounts.to_account_metas(None),
            data: session_escrow::instruction::OpenSession { args }.data(),
        };
        let ed = ed25519_instruction(&provider, &offer.encode());
        let blockhash = client.get_latest_blockhash().await.unwrap();
        let tx = Transaction::new(
            &[&agent],
            Message::new(&[ed, open.clone()], Some(&agent.pubkey())),
            blockhash,
        );
        let signature = client.send_and_confirm_transaction(&tx).await.unwrap();

        let vault_balance = client.get_token_account_balance(&vault).await.unwrap();
        assert_eq!(vault_balance.amount, "50000");
        assert_eq!(
            client
                .get_token_account_balance(&agent_token)
                .await
                .unwrap()
                .amount,
            "950000"
        );
        let session_account = client.get_account(&session).await.unwrap();
        assert_eq!(session_account.owner, session_escrow::ID);
        let record = client
            .get_transaction(
                &signature,
                solana_transaction_status_client_types::UiTransactionEncoding::Base64,
            )
            .await
            .unwrap();
        let logs: Option<Vec<String>> = record.transaction.meta.unwrap().log_messages.into();
        let logs = logs.unwrap();
        assert!(logs
            .iter()
            .any(|l| l.contains(&format!("Program {} success", session_escrow::ID))),);

        // A tampered offer signature fails in preflight, with the precompile's error.
        let mut bad = ed25519_instruction(&provider, &offer.encode());
        bad.data[60] ^= 1;
        // (Same nonce as the open session: the precompile rejects the signature first.)
        let reopen = open;
        let tx = Transaction::new(
            &[&agent],
            Message::new(&[bad, reopen], Some(&agent.pubkey())),
            client.get_latest_blockhash().await.unwrap(),
        );
        let error = client.send_and_confirm_transaction(&tx).await.unwrap_err();
        assert!(
            error.to_string().contains("Transaction simulation failed"),
            "{error}"
        );
        logs
    }
}
