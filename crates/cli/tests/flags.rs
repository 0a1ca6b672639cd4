//! The Solana-style flags of the `x402pp` binary, without a cluster: the default keypair and its
//! clear error, `-u` monikers, the store in the data directory, `-H` and amount errors.
#![allow(clippy::unwrap_used)] // tests

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// `x402pp` with a home of its own and none of the caller's `X402PP_*` settings.
fn x402pp(home: &Path) -> Command {
    let mut command = Command::cargo_bin("x402pp").unwrap();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("X402PP_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("USERPROFILE");
    command
}

/// A fresh directory for one test (removed by the test when it passes).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("x402pp-flags-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn without_a_default_keypair_the_error_says_where_it_looked_and_how_to_make_one() {
    let home = Path::new("/nonexistent/x402pp-home");
    let output = x402pp(home).args(["session", "list"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = stderr(&output);
    assert_eq!(
        stderr.trim_end(),
        "error: no keypair at /nonexistent/x402pp-home/.config/solana/id.json; create one with \
         `x402pp keygen` or pass -k FILE"
    );
}

#[test]
fn keygen_writes_the_default_keypair_that_address_and_config_then_use() {
    let home = scratch("keygen");
    let output = x402pp(&home).arg("keygen").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let created = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(home.join(".config/solana/id.json").is_file());

    let output = x402pp(&home).arg("address").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), created);

    let output = x402pp(&home)
        .args(["config", "--json", "-u", "devnet"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["rpcUrl"], "https://api.devnet.solana.com");
    assert_eq!(
        config["keypair"],
        home.join(".config/solana/id.json").display().to_string()
    );
    assert_eq!(config["keypairExists"], true);
    assert_eq!(
        config["store"],
        home.join(".local/share/x402pp/agent").display().to_string()
    );
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn environment_fallbacks_set_the_cluster_keypair_and_store() {
    let home = Path::new("/nonexistent/x402pp-home");
    let output = x402pp(home)
        .args(["config", "--json"])
        .env("X402PP_RPC_URL", "t")
        .env("X402PP_KEYPAIR", "/keys/agent.json")
        .env("XDG_DATA_HOME", "/data")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["rpcUrl"], "https://api.testnet.solana.com");
    assert_eq!(config["keypair"], "/keys/agent.json");
    assert_eq!(config["store"], "/data/x402pp/agent");

    let output = x402pp(home)
        .args(["config", "--json", "--store", "here"])
        .env("X402PP_AGENT_STORE", "/ignored")
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        config["store"], "here",
        "the flag wins over the environment"
    );
    assert_eq!(
        config["rpcUrl"], "http://127.0.0.1:8899",
        "localhost by default"
    );
}

#[test]
fn an_unknown_cluster_is_refused_before_anything_runs() {
    let output = x402pp(Path::new("/nonexistent"))
        .args(["session", "list", "-u", "mainnet"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr(&output);
    assert!(
        stderr.contains("`mainnet` is not a cluster") && stderr.contains("mainnet-beta (m)"),
        "{stderr}"
    );
}

#[test]
fn a_header_without_a_colon_is_refused_like_curl_would() {
    let output = x402pp(Path::new("/nonexistent"))
        .args([
            "agent",
            "-H",
            "Accept application/json",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr(&output);
    assert!(
        stderr.contains("-H `Accept application/json`: expected `Name: value`"),
        "{stderr}"
    );
}

#[test]
fn amounts_with_more_decimals_than_allowed_fail_with_the_flag_named() {
    let home = Path::new("/nonexistent");
    let output = x402pp(home)
        .args([
            "agent",
            "--max-price",
            "0.0000001",
            "-k",
            "/nonexistent/k.json",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output).trim_end(),
        "error: --max-price: `0.0000001` has 7 decimal places; this amount has at most 6"
    );
    let output = x402pp(home)
        .args([
            "fund",
            "--to",
            "11111111111111111111111111111111",
            "--sol=-1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--sol: `-1` is negative"),
        "{}",
        stderr(&output)
    );
}

/// `x402pp ... | head` closes the pipe before the command is done printing: the command ends
/// quietly, as a Unix tool killed by SIGPIPE does (status 141), not with a panic and a
/// backtrace (seen with `session list --json | grep -q ...`).
#[test]
fn printing_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let home = scratch("closed-pipe");
    // The reading end is closed before the command starts: its first line meets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("x402pp"))
        .arg("config")
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    std::fs::remove_dir_all(&home).unwrap();
}
