//! `x402pp load` as a user runs it: the provider in a child process serves both routes with no
//! error and its CPU time per request is measured; with PostgreSQL (`X402PP_TEST_POSTGRES_URL`),
//! two replicas on one ledger do too. Debug builds, so only sanity: no figure is checked.
#![cfg(feature = "full")]
#![allow(clippy::unwrap_used)] // tests

use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use x402pp_testkit::support::PgSchema;

/// `x402pp load --duration 1 --concurrency 2 --json` plus `extra`, its report parsed.
fn load(extra: &[&str]) -> Value {
    let mut command = Command::cargo_bin("x402pp").unwrap();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("X402PP_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["load", "--duration", "1", "--concurrency", "2", "--json"])
        .args(extra)
        // A cap for a wedged run, far above a debug run on a busy machine.
        .timeout(Duration::from_secs(900))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "load failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// Every run served requests with no error, and the providers spent CPU on them.
fn check_runs(report: &Value, replicas: u64) {
    let runs = report["runs"].as_array().unwrap();
    let routes: Vec<&str> = runs.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(
        routes,
        [
            "GET /health (unpaid)",
            "POST /v1/inference (paid, raw session)"
        ],
        "{report}"
    );
    for run in runs {
        assert_eq!(run["replicas"], replicas, "{run}");
        assert_eq!(run["concurrency"], 2, "{run}");
        assert!(run["requests"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["firstError"].is_null(), "{run}");
        assert!(
            run["providerCpuUsPerRequest"].as_f64().unwrap() > 0.0,
            "{run}"
        );
        let rss = run["providerRssKib"].as_array().unwrap();
        assert_eq!(rss.len() as u64, replicas, "{run}");
        assert!(rss.iter().all(|kib| kib.as_u64().unwrap() > 0), "{run}");
    }
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1, "{report}");
    assert!(
        ratios[0]["paidOverUnpaid"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn load_measures_a_provider_child_process_on_both_routes_without_errors() {
    let report = load(&[]);
    assert_eq!(report["ledger"], "sqlite");
    assert_eq!(report["providers"], 1);
    check_runs(&report, 1);
}

#[tokio::test]
async fn two_replicas_on_one_postgres_ledger_serve_the_workers_spread_over_them() {
    let Some(schema) = PgSchema::create("x402pp_load").await.unwrap() else {
        return;
    };
    let url = schema.url();
    let report = tokio::task::spawn_blocking(move || {
        load(&["--replicas", "2", "--database-url", url.as_str()])
    })
    .await;
    schema.drop().await;
    let report = report.unwrap();
    assert_eq!(report["ledger"], "postgres");
    assert_eq!(report["providers"], 2);
    check_runs(&report, 2);
}
