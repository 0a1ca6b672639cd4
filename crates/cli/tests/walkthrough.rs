//! The docs/cli.md walkthrough (`scripts/cli-walkthrough.sh`) against this build of the binary:
//! a localnet, facilitator and provider in the background, a default keypair in a temporary
//! home, paid requests, the session listed, shown, topped up, closed and finalized.
#![cfg(feature = "full")]
#![allow(clippy::unwrap_used)] // tests

use std::path::Path;
use std::process::Command;

#[test]
fn the_cli_walkthrough_runs_as_written() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cli-walkthrough.sh");
    for tool in ["bash", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipped: the walkthrough needs {tool}");
            return;
        }
    }
    let output = Command::new("bash")
        .arg(&script)
        .env("X402PP_BIN", env!("CARGO_BIN_EXE_x402pp"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.trim_end().ends_with("walkthrough OK"), "{stdout}");
}
