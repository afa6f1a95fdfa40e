//! Every rule of `sable_tidy` over the real workspace. Each rule's own unit tests show it
//! firing on a broken input; here each must find nothing.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

fn cargo_metadata() -> anyhow::Result<Value> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[test]
fn no_crate_depends_on_a_crate_above_or_beside_it_and_every_member_is_checked() -> anyhow::Result<()>
{
    let metadata = cargo_metadata()?;
    let report = sable_tidy::check_layering(&metadata);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    let members = metadata["workspace_members"].as_array().map_or(0, Vec::len);
    assert!(members > 0, "cargo metadata listed no workspace members");
    assert_eq!(
        report.checked.len(),
        members,
        "checked {:?}",
        report.checked
    );
    Ok(())
}

#[test]
fn sable_core_does_no_io() -> anyhow::Result<()> {
    let root = workspace_root();
    let sources = sable_tidy::rust_sources(&root, Path::new("crates/sable-core/src"))?;
    assert!(!sources.is_empty());
    let violations = sable_tidy::check_core_is_pure(&cargo_metadata()?, &sources);
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}

#[test]
fn every_workspace_member_has_a_code_map_heading() -> anyhow::Result<()> {
    let root = workspace_root();
    let members = sable_tidy::member_dirs(&cargo_metadata()?, &root);
    assert!(!members.is_empty());
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))?;
    let violations = sable_tidy::check_code_map(&members, &architecture);
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}

/// The test files of the workspace: `tests/` and every crate's `tests/`.
fn test_sources(root: &Path) -> anyhow::Result<std::collections::BTreeMap<PathBuf, String>> {
    let mut sources = sable_tidy::rust_sources(root, Path::new("tests"))?;
    for group in ["crates", "services"] {
        for entry in std::fs::read_dir(root.join(group))? {
            let tests = entry?.path().join("tests");
            let relative = tests.strip_prefix(root)?.to_path_buf();
            sources.extend(sable_tidy::rust_sources(root, &relative)?);
        }
    }
    Ok(sources)
}

#[test]
fn tests_use_no_literal_ports() -> anyhow::Result<()> {
    let sources = test_sources(&workspace_root())?;
    assert!(
        sources.len() > 10,
        "found only {} test files",
        sources.len()
    );
    let violations = sable_tidy::check_no_literal_ports(&sources);
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}

#[test]
fn no_map_err_drops_a_cause_unless_justified() -> anyhow::Result<()> {
    let root = workspace_root();
    let mut sources = std::collections::BTreeMap::new();
    for dir in ["crates", "services", "tests"] {
        sources.extend(sable_tidy::rust_sources(&root, Path::new(dir))?);
    }
    // This crate names the pattern to describe and test the rule.
    sources.retain(|path, _| !path.starts_with("crates/sable-tidy"));
    let violations =
        sable_tidy::check_dropped_causes(&sources, &sable_tidy::JUSTIFIED_DROPPED_CAUSES);
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}
