//! The `x402pp` binary as a user runs it: the demo with a small N and its report (with the
//! default `full` feature), and clear errors with a non-zero exit for bad input.
#![allow(clippy::unwrap_used)] // tests

use assert_cmd::Command;
#[cfg(feature = "full")]
use serde_json::Value;

fn x402pp() -> Command {
    Command::cargo_bin("x402pp").unwrap()
}

#[cfg(feature = "full")]
#[test]
fn the_demo_runs_every_scheme_and_reconciles_to_the_atomic_unit() {
    let output = x402pp()
        .args(["demo", "--requests", "6", "--agents", "2", "--json"])
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["session"]["requests"], 12);
    assert_eq!(report["exact"]["requests"], 12);
    assert_eq!(report["receiptsVerified"], 12);
    assert_eq!(report["slaBreaches"], 1);
    assert_eq!(report["disputes"], 1);
    // 1 000 × 5 000 bps / 10 000.
    assert_eq!(report["penaltiesRefunded"], 500);
    // Sessions: per session its open, the provider's early close (with the final voucher) and
    // finalize; plus the one dispute, sent after the close.
    assert_eq!(report["session"]["transactions"], 2 * 3 + 1);
    assert_eq!(report["exact"]["transactions"], 12);
    // The dispute moved the penalty from the provider to the agent at finalize.
    assert_eq!(report["session"]["providerReceived"], 12 * 1_000 - 500);
    assert_eq!(report["session"]["agentsSpent"], 12 * 1_000 - 500);
    assert_eq!(report["exact"]["providerReceived"], 12 * 1_000);
    assert_eq!(report["vaultsLeft"], 0);
    // With X402PP_ESCROW_SO set (CI does it once) the demo runs on the SBF build, on the real
    // loader; every escrow transaction asked for a compute unit limit and stayed within it.
    let runtime = match std::env::var_os("X402PP_ESCROW_SO") {
        Some(_) => "sbf",
        None => "native",
    };
    assert_eq!(report["escrowRuntime"], runtime);
    // Metered streaming: 2 agents × 6 completions, one cut by the first agent and recovered.
    let metered = &report["metered"];
    let rows = metered["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let cut: Vec<&Value> = rows.iter().filter(|r| r["cut"] == true).collect();
    assert_eq!(cut.len(), 1, "one stream cut");
    assert!(cut[0]["recovered"].as_bool().unwrap());
    assert!(cut[0]["tokens"].as_u64().unwrap() >= 37);
    let charged: u64 = rows.iter().map(|r| r["charged"].as_u64().unwrap()).sum();
    assert_eq!(metered["settledByClose"], charged);
    assert_eq!(metered["providerReceived"], charged);
    assert_eq!(metered["agentsSpent"], charged);
    assert!(metered["lastVouchersAuthorised"].as_u64().unwrap() > charged);
    assert_eq!(
        report["escrowTransactions"].as_u64().unwrap(),
        report["session"]["transactions"].as_u64().unwrap() + 2 * 3,
        "every session transaction invokes the escrow program (a metered session: open, close, \
         finalize)"
    );
    for pair in report["escrowComputeUnits"].as_array().unwrap() {
        let (used, limit) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
        assert!(
            0 < used && used <= limit,
            "used {used} of a limit of {limit}"
        );
    }
    assert_eq!(
        report["offerForIntent"].as_str().unwrap().len(),
        32,
        "an offer id answered the intent"
    );
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check[1], true, "check failed: {}", check[0]);
    }
}

#[cfg(feature = "full")]
#[test]
fn bad_demo_arguments_exit_non_zero_with_a_clear_message() {
    let output = x402pp().args(["demo", "--requests", "0"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--requests must be between 1 and 100000")
    );
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_private_files() {
    let dir = std::env::temp_dir().join(format!("x402pp-cli-{}", std::process::id()));
    let path = dir.join("id.json");
    let output = x402pp()
        .args(["keygen", "--outfile"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let address = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!((32..=44).contains(&address.len()), "{address}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = x402pp()
        .args(["keygen", "--outfile"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_agent_with_a_missing_keypair_file_fails_clearly() {
    let output = x402pp()
        .args([
            "agent",
            "get",
            "http://127.0.0.1:9/x",
            "--keypair",
            "/nonexistent/key.json",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("/nonexistent/key.json"),
        "{stderr}"
    );
}
