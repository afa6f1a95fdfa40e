//! Fuzzing the API from its own document: schemathesis (PyPI, pinned; installed by
//! `ensure_schemathesis` in `scripts/services.sh`) reads `GET /v1/openapi.json` from a
//! real gateway (with a worker and the fake provider behind it) and sends every
//! operation generated valid and invalid requests, examples first, then the coverage
//! phase's edge cases, random fuzzing and stateful sequences, bounded by examples per
//! operation and a time budget. It checks that no answer is a 5xx, that every status,
//! content type and header the gateway answers is one the document lists, and that
//! every body matches its schema; then no role's log may hold a panic. The number of
//! cases it ran is printed (and recorded in docs/BENCHMARKS.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::support::{StackOptions, TestStack};

/// The pinned release `scripts/services.sh` installs (keep the two in step).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Generated cases per operation and phase.
const MAX_EXAMPLES: &str = "25";
/// The whole run's budget, seconds: a couple of minutes at most on two cores.
const MAX_TIME: &str = "120";
/// The same cases every run, so a CI failure can be replayed; change it to explore.
const SEED: &str = "19";

/// Where `ensure_schemathesis` puts it, unless `SABLE_SCHEMATHESIS` names a binary.
fn schemathesis_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SABLE_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("SABLE_TOOLS_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/sable")
        },
        PathBuf::from,
    );
    tools
        .join(format!("schemathesis-{SCHEMATHESIS_VERSION}"))
        .join("bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() -> anyhow::Result<()> {
    let binary = schemathesis_binary();
    anyhow::ensure!(
        binary.exists(),
        "schemathesis {SCHEMATHESIS_VERSION} is not at {} (scripts/test.sh installs it: \
         `. scripts/services.sh && ensure_schemathesis`)",
        binary.display()
    );
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![
            // A waiting request answers within seconds, so the budget buys many cases.
            ("SABLE_WAIT_TIMEOUT_MS", "3000".into()),
            (
                "SABLE_SECRETS_KEY",
                sable_store::SecretsKey::generate_base64(),
            ),
        ],
        ..StackOptions::default()
    })
    .await?;
    // An admin key, so the admin routes are fuzzed past their 403.
    let key = stack
        .sable(&["admin", "key", "create", "--admin", "--org", &stack.org_id])
        .await?;
    let url = &stack.gateways[0].url;
    let work_dir = std::env::temp_dir().join(format!(
        "sable-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&work_dir)?;
    let report = work_dir.join("report.xml");
    let run = tokio::process::Command::new(&binary)
        .current_dir(&work_dir)
        .env("NO_COLOR", "1")
        .args(["run", &format!("{url}/v1/openapi.json")])
        .args(["--url", url])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--max-time", MAX_TIME])
        .args(["--seed", SEED])
        // Revoking keys is covered by the router tests; here it would revoke the run's
        // own key (listed by `GET /v1/keys`) and leave the rest of the run at 401.
        .args(["--exclude-operation-id", "revoke_own_key"])
        .args(["--exclude-operation-id", "revoke_org_key"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .args(["--suppress-health-check", "all"])
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(&report)
        .arg("--no-color")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .context("schemathesis ran past its own time budget")?
        .context("schemathesis starts")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cases = cases_run(&stdout);
    eprintln!("{stdout}");
    anyhow::ensure!(
        output.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        stack.logs()
    );
    let cases = cases.context("schemathesis printed no case count")?;
    // Printed after the run by scripts/test.sh, with the fault scenarios' report.
    crate::faults::print_report(&format!(
        "schemathesis {SCHEMATHESIS_VERSION} against /v1/openapi.json: {cases} test cases, \
         no server error, no schema violation"
    ))?;
    anyhow::ensure!(cases >= 500, "only {cases} cases ran:\n{stdout}");
    // The run's key still works, so every case past the first was a real request.
    let agents = stack
        .http
        .get(format!("{url}/v1/agents"))
        .bearer_auth(&key)
        .send()
        .await?;
    anyhow::ensure!(
        agents.status().is_success(),
        "the run's key stopped working ({}): later cases were only 401s",
        agents.status()
    );
    let logs = stack.full_logs()?;
    anyhow::ensure!(
        !logs.contains("panicked"),
        "a role panicked under fuzzing:\n{logs}"
    );
    std::fs::remove_dir_all(&work_dir).ok();
    Ok(())
}

/// The "N generated" of schemathesis' summary: the test cases it ran.
fn cases_run(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|line| {
        let (count, _) = line.trim().split_once(" generated")?;
        count.trim().rsplit(' ').next()?.parse().ok()
    })
}
