//! Layering, checked from `cargo metadata`: core ← adapters ← runtime ← services ← cli.
//! A crate may depend only on crates of a lower layer: adapters never on each other,
//! services never on each other.

use std::collections::BTreeMap;

fn layer(name: &str) -> Option<u8> {
    Some(match name {
        "sable-core" | "sable-proto" => 0,
        "sable-store" | "sable-bus" | "sable-llm" | "sable-telemetry" => 1,
        "sable-runtime" | "sable-tools" => 2,
        "sable-gateway" | "sable-worker" | "sable-mcp-sidecar" | "sable-cron" => 3,
        "sable-cli" => 4,
        "sable-testkit" => 5,
        "sable-bench" => 6,
        _ => return None,
    })
}

#[test]
fn no_crate_depends_on_a_crate_above_or_beside_it() -> anyhow::Result<()> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(sable_testkit::workspace_root())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut checked = BTreeMap::new();
    let mut violations = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let own =
            layer(name).unwrap_or_else(|| panic!("crate {name} has no layer; add it to this test"));
        for dependency in package["dependencies"].as_array().unwrap() {
            let is_normal = dependency["kind"].is_null();
            let Some(theirs) = layer(dependency["name"].as_str().unwrap()).filter(|_| is_normal)
            else {
                continue;
            };
            if theirs >= own {
                violations.push(format!(
                    "{name} (layer {own}) -> {} (layer {theirs})",
                    dependency["name"]
                ));
            }
        }
        checked.insert(name.to_owned(), own);
    }
    assert!(
        violations.is_empty(),
        "upward or sideways dependencies: {violations:#?}"
    );
    // Every workspace member was checked, and there are enough of them that the check
    // cannot pass on an empty or half-read workspace.
    let members = metadata["workspace_members"].as_array().map_or(0, Vec::len);
    assert_eq!(
        checked.len(),
        members,
        "expected to check every workspace crate, checked {checked:?}"
    );
    assert!(
        checked.len() >= 14,
        "only {} crates found: {checked:?}",
        checked.len()
    );
    Ok(())
}
