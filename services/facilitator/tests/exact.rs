//! The facilitator over real HTTP against a real localnet bank: a valid exact payment verifies
//! and settles for exactly its amount, every rejection rule of the spec answers with its code,
//! and one transaction settled twice concurrently settles once.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use serde_json::{json, Value};
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_sdk::hash::Hash;
use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::message::{v0, VersionedMessage};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::{PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse};
use x402pp_protocol::Network;
use x402pp_solana::token;
use x402pp_testkit::Facilitator;

const PRICE: u64 = 10_000;

/// The kit's world (a localnet, the facilitator service over HTTP), a payee with token accounts
/// of both mints, and a client holding both (no SOL: the facilitator pays the fees).
struct World {
    kit: x402pp_testkit::World,
    /// The facilitator's base URL.
    url: String,
    fee_payer: Pubkey,
    payee: Pubkey,
    client: Keypair,
}

x402pp_testkit::deref_world!(World, kit);

async fn world() -> World {
    let kit = x402pp_testkit::World::builder()
        .no_provider()
        .facilitator(Facilitator::Http)
        .start()
        .await
        .expect("the world starts");
    let payee = Pubkey::new_unique();
    kit.fund(&payee, 0, 0).expect("payee token account");
    kit.localnet
        .mint_to_of(&kit.localnet.usdc_2022_mint(), &payee, 0)
        .expect("payee 2022 account");
    let client = Keypair::new();
    kit.fund(&client.pubkey(), 0, 1_000_000)
        .expect("client funds");
    kit.localnet
        .mint_to_of(&kit.localnet.usdc_2022_mint(), &client.pubkey(), 1_000_000)
        .expect("client 2022 funds");
    World {
        url: kit.facilitator_url(),
        fee_payer: kit.fee_payer.pubkey(),
        kit,
        payee,
        client,
    }
}

impl World {
    fn requirements(&self, mint: Pubkey) -> PaymentRequirements {
        serde_json::from_value(json!({
            "scheme": "exact",
            "network": self.network,
            "amount": PRICE.to_string(),
            "asset": mint.to_string(),
            "payTo": self.payee.to_string(),
            "maxTimeoutSeconds": 60,
            "extra": { "feePayer": self.fee_payer.to_string() }
        }))
        .unwrap()
    }

    /// The standard four instructions of an exact payment from `client`.
    fn instructions(&self, mint: Pubkey, token_program: Pubkey, amount: u64) -> Vec<Instruction> {
        let source = token::associated_token_address(&self.client.pubkey(), &mint, &token_program);
        let destination = token::associated_token_address(&self.payee, &mint, &token_program);
        vec![
            ComputeBudgetInstruction::set_compute_unit_limit(20_000),
            ComputeBudgetInstruction::set_compute_unit_price(1),
            token::transfer_checked(
                &token_program,
                &source,
                &mint,
                &destination,
                &self.client.pubkey(),
                amount,
                6,
            ),
            token::memo("0123456789abcdef0123456789abcdef"),
        ]
    }

    async fn blockhash(&self) -> Hash {
        self.rpc.get_latest_blockhash().await.unwrap()
    }

    /// Compiles `instructions` with the facilitator as fee payer; signs with `signers` only.
    fn transaction(
        &self,
        instructions: &[Instruction],
        blockhash: Hash,
        signers: &[&Keypair],
    ) -> VersionedTransaction {
        let message = VersionedMessage::V0(
            v0::Message::try_compile(&self.fee_payer, instructions, &[], blockhash).unwrap(),
        );
        let bytes = message.serialize();
        let keys = message.static_account_keys();
        let count = usize::from(message.header().num_required_signatures);
        let mut signatures = vec![Signature::default(); count];
        for signer in signers {
            if let Some(i) = keys.iter().take(count).position(|k| *k == signer.pubkey()) {
                signatures[i] = signer.sign_message(&bytes);
            }
        }
        VersionedTransaction {
            signatures,
            message,
        }
    }

    fn request(&self, requirements: &PaymentRequirements, tx: &VersionedTransaction) -> Value {
        use base64::Engine as _;
        let transaction =
            base64::engine::general_purpose::STANDARD.encode(bincode::serialize(tx).unwrap());
        json!({
            "x402Version": 2,
            "paymentPayload": {
                "x402Version": 2,
                "accepted": requirements,
                "payload": { "transaction": transaction }
            },
            "paymentRequirements": requirements
        })
    }

    async fn verify(&self, body: &Value) -> VerifyResponse {
        let response = self
            .http
            .post(format!("{}/verify", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn settle(&self, body: &Value) -> SettleResponse {
        let response = self
            .http
            .post(format!("{}/settle", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn token_balance(&self, owner: &Pubkey, mint: Pubkey, token_program: Pubkey) -> u64 {
        self.tokens_of(owner, &mint, &token_program).await.unwrap()
    }

    /// Verifies `tx` and asserts it is rejected with `reason`, and that settling it moves nothing.
    async fn assert_rejected(
        &self,
        requirements: &PaymentRequirements,
        tx: &VersionedTransaction,
        reason: &str,
    ) {
        let mint = requirements.asset.parse().unwrap();
        let before = self
            .token_balance(&self.payee, mint, token::TOKEN_PROGRAM_ID)
            .await;
        let body = self.request(requirements, tx);
        let verdict = self.verify(&body).await;
        assert!(!verdict.is_valid, "{reason}: verify accepted it");
        assert_eq!(
            verdict.invalid_reason.as_deref(),
            Some(reason),
            "{:?}",
            verdict.invalid_message
        );
        let settled = self.settle(&body).await;
        assert!(!settled.success);
        assert_eq!(settled.error_reason.as_deref(), Some(reason));
        assert!(settled.transaction.is_empty(), "nothing was sent");
        assert_eq!(
            self.token_balance(&self.payee, mint, token::TOKEN_PROGRAM_ID)
                .await,
            before
        );
    }
}

#[tokio::test]
async fn valid_exact_payment_verifies_settles_and_pays_exactly_the_amount() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let requirements = w.requirements(mint);
    let body = w.paid_request(&w.client, &requirements).await;
    let payee_before = w
        .token_balance(&w.payee, mint, token::TOKEN_PROGRAM_ID)
        .await;
    let client_before = w
        .token_balance(&w.client.pubkey(), mint, token::TOKEN_PROGRAM_ID)
        .await;
    let fee_payer_before = w.rpc.get_balance(&w.fee_payer).await.unwrap();

    let verdict = w.verify(&body).await;
    assert!(verdict.is_valid, "{verdict:?}");
    assert_eq!(verdict.payer, Some(w.client.pubkey().to_string()));

    let settled = w.settle(&body).await;
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.network, w.network);
    assert_eq!(settled.amount.as_deref(), Some("10000"));
    let signature: Signature = settled
        .transaction
        .parse()
        .expect("a transaction signature");
    assert!(w
        .rpc
        .get_signature_status(&signature)
        .await
        .unwrap()
        .is_some_and(|r| r.is_ok()));

    assert_eq!(
        w.token_balance(&w.payee, mint, token::TOKEN_PROGRAM_ID)
            .await,
        payee_before + PRICE
    );
    assert_eq!(
        w.token_balance(&w.client.pubkey(), mint, token::TOKEN_PROGRAM_ID)
            .await,
        client_before - PRICE
    );
    let fee = w.fee_payer_spent(fee_payer_before).await;
    assert!(
        (10_000..20_000).contains(&fee),
        "the fee payer paid only the fee (two signatures): {fee}"
    );
}

impl World {
    /// A facilitator request carrying a real payment built by our exact client for `payer`.
    async fn paid_request(&self, payer: &Keypair, requirements: &PaymentRequirements) -> Value {
        let payload: PaymentPayload =
            x402pp_solana::exact::client::build_payment(&self.rpc, payer, requirements, None)
                .await
                .unwrap();
        json!({ "x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirements })
    }

    async fn fee_payer_spent(&self, before: u64) -> u64 {
        before - self.rpc.get_balance(&self.fee_payer).await.unwrap()
    }
}

#[tokio::test]
async fn token_2022_payments_verify_and_settle() {
    let w = world().await;
    let mint = w.localnet.usdc_2022_mint();
    let requirements = w.requirements(mint);
    let body = w.paid_request(&w.client, &requirements).await;
    let before = w
        .token_balance(&w.payee, mint, token::TOKEN_2022_PROGRAM_ID)
        .await;
    let settled = w.settle(&body).await;
    assert!(settled.success, "{settled:?}");
    assert_eq!(
        w.token_balance(&w.payee, mint, token::TOKEN_2022_PROGRAM_ID)
            .await,
        before + PRICE
    );
}

#[tokio::test]
async fn every_rejection_rule_answers_with_its_code_and_moves_nothing() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let spl = token::TOKEN_PROGRAM_ID;
    let requirements = w.requirements(mint);
    let hash = w.blockhash().await;

    // Wrong amount.
    let tx = w.transaction(&w.instructions(mint, spl, PRICE - 1), hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_amount_mismatch",
    )
    .await;

    // Wrong destination: the client's own account.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs[2].accounts[2].pubkey = token::associated_token_address(&w.client.pubkey(), &mint, &spl);
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_recipient_mismatch",
    )
    .await;

    // Wrong mint: the Token-2022 USDC through SPL Token.
    let other = w.localnet.usdc_2022_mint();
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs[2].accounts[1].pubkey = other;
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_mint_mismatch",
    )
    .await;

    // Fee payer in an instruction's accounts.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs[3]
        .accounts
        .push(AccountMeta::new_readonly(w.fee_payer, false));
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
    )
    .await;

    // Fee payer as the transfer authority (draining the facilitator's own tokens).
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs[2].accounts[0].pubkey = token::associated_token_address(&w.fee_payer, &mint, &spl);
    ixs[2].accounts[3].pubkey = w.fee_payer;
    let tx = w.transaction(&ixs, hash, &[]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    )
    .await;

    // Compute price over 5 lamports per CU.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs[1] = ComputeBudgetInstruction::set_compute_unit_price(5_000_001);
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
    )
    .await;

    // An extra instruction (a SOL transfer) after the transfer.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs.insert(
        3,
        solana_system_transfer(&w.client.pubkey(), &Pubkey::new_unique(), 1),
    );
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_unknown_fourth_instruction",
    )
    .await;

    // No memo.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs.pop();
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(&requirements, &tx, "invalid_exact_svm_payload_memo_count")
        .await;

    // Instructions out of order.
    let mut ixs = w.instructions(mint, spl, PRICE);
    ixs.swap(0, 1);
    let tx = w.transaction(&ixs, hash, &[&w.client]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
    )
    .await;

    // Unsigned by the client.
    let tx = w.transaction(&w.instructions(mint, spl, PRICE), hash, &[]);
    w.assert_rejected(
        &requirements,
        &tx,
        "invalid_exact_svm_payload_transaction_signature",
    )
    .await;
}

#[tokio::test]
async fn an_empty_memo_or_a_memo_that_is_not_the_required_one_is_refused_and_moves_nothing() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let spl = token::TOKEN_PROGRAM_ID;
    let hash = w.blockhash().await;
    let with_memos = |memos: &[&[u8]]| {
        let mut ixs = w.instructions(mint, spl, PRICE);
        ixs.pop();
        for memo in memos {
            ixs.push(Instruction {
                program_id: token::MEMO_PROGRAM_ID,
                accounts: Vec::new(),
                data: memo.to_vec(),
            });
        }
        w.transaction(&ixs, hash, &[&w.client])
    };
    let requiring = |memo: &str| {
        let mut requirements = w.requirements(mint);
        requirements.extra = Some(json!({ "feePayer": w.fee_payer.to_string(), "memo": memo }));
        requirements
    };
    let mismatch = "invalid_exact_svm_payload_memo_mismatch";

    // No extra.memo: the memo must be the client's random nonce (at least 16 bytes, UTF-8), the
    // transaction's uniqueness; an empty one (it lands: the Memo program accepts empty data) or
    // a short one is not.
    let open = w.requirements(mint);
    for memo in [&b""[..], b"0123456789abcde", b"\xff\xfe0123456789abcdef"] {
        let tx = with_memos(&[memo]);
        w.assert_rejected(&open, &tx, mismatch).await;
    }
    // An empty extra.memo requires nothing more than no extra.memo (as x402's own facilitator
    // reads it): an empty memo does not match it.
    w.assert_rejected(&requiring(""), &with_memos(&[b""]), mismatch)
        .await;

    // extra.memo set: exactly one memo, equal to it.
    let invoice = requiring("invoice-42");
    for memo in [
        &b""[..],
        b"invoice-43",
        b"invoice-42 ",
        b"0123456789abcdef0123456789abcdef",
    ] {
        w.assert_rejected(&invoice, &with_memos(&[memo]), mismatch)
            .await;
    }
    w.assert_rejected(
        &invoice,
        &with_memos(&[b"invoice-42", b"invoice-42"]),
        "invalid_exact_svm_payload_memo_count",
    )
    .await;

    // The right memos pass verification.
    let verdict = w
        .verify(&w.request(&invoice, &with_memos(&[b"invoice-42"])))
        .await;
    assert!(verdict.is_valid, "{verdict:?}");
    let verdict = w
        .verify(&w.request(&open, &with_memos(&[b"0123456789abcdef"])))
        .await;
    assert!(verdict.is_valid, "{verdict:?}");
}

fn solana_system_transfer(from: &Pubkey, to: &Pubkey, lamports: u64) -> Instruction {
    let mut data = vec![2, 0, 0, 0];
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction {
        program_id: token::SYSTEM_PROGRAM_ID,
        accounts: vec![AccountMeta::new(*from, true), AccountMeta::new(*to, false)],
        data,
    }
}

#[tokio::test]
async fn payer_without_enough_tokens_gets_insufficient_funds() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let poor = Keypair::new();
    w.localnet.mint_to(&poor.pubkey(), PRICE - 1).unwrap();
    let requirements = w.requirements(mint);
    let body = w.paid_request(&poor, &requirements).await;
    let verdict = w.verify(&body).await;
    assert_eq!(
        verdict.invalid_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(verdict.payer, Some(poor.pubkey().to_string()));
}

#[tokio::test]
async fn expired_blockhash_fails_simulation_and_is_not_settled() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let requirements = w.requirements(mint);
    let old = w.blockhash().await;
    w.localnet.advance_slots(200);
    let tx = w.transaction(
        &w.instructions(mint, token::TOKEN_PROGRAM_ID, PRICE),
        old,
        &[&w.client],
    );
    w.assert_rejected(&requirements, &tx, "transaction_simulation_failed")
        .await;
}

#[tokio::test]
async fn same_transaction_settled_twice_concurrently_settles_once() {
    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let requirements = w.requirements(mint);
    let body = w.paid_request(&w.client, &requirements).await;
    let before = w
        .token_balance(&w.payee, mint, token::TOKEN_PROGRAM_ID)
        .await;
    let (a, b) = tokio::join!(w.settle(&body), w.settle(&body));
    let successes = [&a, &b].iter().filter(|r| r.success).count();
    assert_eq!(successes, 1, "{a:?} {b:?}");
    let loser = if a.success { &b } else { &a };
    assert_eq!(loser.error_reason.as_deref(), Some("duplicate_settlement"));
    assert_eq!(
        w.token_balance(&w.payee, mint, token::TOKEN_PROGRAM_ID)
            .await,
        before + PRICE
    );
    // And later retries are refused too, within the window.
    assert_eq!(
        w.settle(&body).await.error_reason.as_deref(),
        Some("duplicate_settlement")
    );
}

/// Payments settled at once from one source that holds enough for one of them.
const BURST: usize = 8;

#[tokio::test]
async fn a_burst_of_settles_from_a_source_funded_for_one_payment_sends_one_transaction_and_refuses_the_rest(
) {
    use base64::Engine as _;

    let w = world().await;
    let mint = w.localnet.usdc_mint();
    let spl = token::TOKEN_PROGRAM_ID;
    let requirements = w.requirements(mint);
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), PRICE).unwrap();
    // BURST distinct payments (each its own random memo), every one valid on its own.
    let mut bodies = Vec::new();
    for _ in 0..BURST {
        bodies.push(w.paid_request(&payer, &requirements).await);
    }
    // The signature each would carry on chain: the fee payer's over its message.
    let fee_payer_key = w.kit.fee_payer.clone();
    let transactions: Vec<VersionedTransaction> = bodies
        .iter()
        .map(|body| {
            let text = body["paymentPayload"]["payload"]["transaction"]
                .as_str()
                .unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            bincode::deserialize(&bytes).unwrap()
        })
        .collect();
    let signatures: Vec<Signature> = transactions
        .iter()
        .map(|tx| fee_payer_key.sign_message(&tx.message.serialize()))
        .collect();
    let VersionedMessage::V0(message) = &transactions[0].message else {
        panic!("the exact client builds v0 messages");
    };
    let one_fee = w.rpc.get_fee_for_message(message).await.unwrap();
    let fee_payer_before = w.rpc.get_balance(&w.fee_payer).await.unwrap();
    let payee_before = w.token_balance(&w.payee, mint, spl).await;

    // All at once: each request is its own task on its own connection.
    let tasks: Vec<_> = bodies
        .iter()
        .map(|body| {
            let request = w.http.post(format!("{}/settle", w.url)).json(body);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    let mut answers: Vec<SettleResponse> = Vec::new();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        answers.push(response.json().await.unwrap());
    }

    let settled: Vec<&SettleResponse> = answers.iter().filter(|a| a.success).collect();
    assert_eq!(settled.len(), 1, "{answers:#?}");
    for refused in answers.iter().filter(|a| !a.success) {
        assert_eq!(
            refused.error_reason.as_deref(),
            Some("insufficient_funds"),
            "{refused:?}"
        );
        assert!(
            refused.transaction.is_empty(),
            "nothing was sent: {refused:?}"
        );
    }
    // Exactly one of them reached the chain, and it succeeded.
    let sent: Vec<_> = w
        .localnet
        .transactions()
        .into_iter()
        .filter(|t| signatures.contains(&t.signature))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].succeeded);
    assert_eq!(settled[0].transaction, sent[0].signature.to_string());
    // The fee payer paid one fee, the payee got one payment, the payer spent what it had.
    assert_eq!(w.fee_payer_spent(fee_payer_before).await, one_fee);
    assert_eq!(
        w.token_balance(&w.payee, mint, spl).await,
        payee_before + PRICE
    );
    assert_eq!(w.token_balance(&payer.pubkey(), mint, spl).await, 0);
}

#[tokio::test]
async fn payment_for_another_network_or_fee_payer_is_refused() {
    let w = world().await;
    let mut requirements = w.requirements(w.localnet.usdc_mint());
    let mut body = w.paid_request(&w.client, &requirements).await;
    body["paymentRequirements"]["network"] = json!(Network::SOLANA_MAINNET);
    assert_eq!(
        w.verify(&body).await.invalid_reason.as_deref(),
        Some("network_mismatch")
    );
    requirements.extra = Some(json!({ "feePayer": Pubkey::new_unique().to_string() }));
    body["paymentRequirements"] = serde_json::to_value(&requirements).unwrap();
    assert_eq!(
        w.verify(&body).await.invalid_reason.as_deref(),
        Some("fee_payer_not_managed_by_facilitator")
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_json_and_the_server_keeps_serving() {
    let w = world().await;
    for body in [
        "",
        "{",
        "[]",
        "{\"x402Version\":1}",
        "{\"x402Version\":2,\"paymentPayload\":{}}",
    ] {
        let response = w
            .http
            .post(format!("{}/verify", w.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"], "malformed_request", "{body:?}");
    }
    let huge = "x".repeat(x402pp_facilitator::MAX_BODY_BYTES + 1);
    let response = w
        .http
        .post(format!("{}/settle", w.url))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A garbage transaction in an otherwise valid request is a verification failure, not a 400.
    let requirements = w.requirements(w.localnet.usdc_mint());
    let body = json!({ "x402Version": 2, "paymentPayload": { "x402Version": 2, "accepted": requirements, "payload": { "transaction": "not base64!" } }, "paymentRequirements": requirements });
    assert_eq!(
        w.verify(&body).await.invalid_reason.as_deref(),
        Some("invalid_exact_svm_payload_transaction_could_not_be_decoded")
    );
    let health = w
        .http
        .get(format!("{}/health", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn supported_lists_exact_on_this_network_with_the_fee_payer() {
    let w = world().await;
    let supported: Value = w
        .http
        .get(format!("{}/supported", w.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(supported["kinds"][0]["x402Version"], 2);
    assert_eq!(supported["kinds"][0]["scheme"], "exact");
    assert_eq!(supported["kinds"][0]["network"], json!(w.network));
    assert_eq!(
        supported["kinds"][0]["extra"]["feePayer"],
        w.fee_payer.to_string()
    );
    assert_eq!(supported["signers"]["solana:*"][0], w.fee_payer.to_string());
    assert!(supported["extensions"].as_array().is_some());
    let requirements = w.requirements(w.localnet.usdc_mint());
    let tx = w.transaction(
        &w.instructions(w.localnet.usdc_mint(), token::TOKEN_PROGRAM_ID, 1),
        w.blockhash().await,
        &[&w.client],
    );
    w.verify(&w.request(&requirements, &tx)).await;
    let metrics = w
        .http
        .get(format!("{}/metrics", w.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = "x402pp_facilitator_verify_requests_total{result=\"invalid_exact_svm_payload_amount_mismatch\"} 1";
    assert!(metrics.contains(line), "{metrics}");
}
