//! The workspace's conventions as checks (rust-analyzer's `tidy.rs` is the model): each
//! rule is a function from what it reads (`cargo metadata`, file texts) to the
//! violations it finds, so a unit test can break each rule once and watch it fire, and
//! `tests/tidy.rs` runs every rule over the real workspace.
//!
//! Reads files and runs `cargo metadata`; depends on nothing of ours, and nothing of ours
//! depends on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The layer of each workspace crate, lowest first. A crate may depend only on crates of
/// a lower layer (so adapters never on each other, services never on each other).
/// `sable-testkit` is test support: only tests (dev-dependencies) and `sable-bench` may
/// use it.
pub fn layer(name: &str) -> Option<u8> {
    Some(match name {
        "sable-core" | "sable-proto" => 0,
        "sable-store" | "sable-bus" | "sable-llm" | "sable-telemetry" => 1,
        "sable-runtime" | "sable-tools" => 2,
        "sable-gateway" | "sable-worker" | "sable-mcp-sidecar" | "sable-cron" => 3,
        "sable-cli" => 4,
        "sable-testkit" => 5,
        "sable-bench" => 6,
        "sable-tidy" => 7,
        _ => return None,
    })
}

const TESTKIT: &str = "sable-testkit";

/// What the layering check found.
#[derive(Debug, Default)]
pub struct LayeringReport {
    /// Every workspace crate checked, with its layer.
    pub checked: BTreeMap<String, u8>,
    pub violations: Vec<String>,
}

/// Checks every dependency edge between workspace crates, dev-dependencies included: a
/// normal or build dependency must point to a lower layer; a dev-dependency too, except
/// that any crate's tests may use `sable-testkit`.
pub fn check_layering(metadata: &Value) -> LayeringReport {
    let mut report = LayeringReport::default();
    for package in packages(metadata) {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(own) = layer(name) else {
            report
                .violations
                .push(format!("{name} has no layer: add it to sable_tidy::layer"));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let theirs_name = dependency["name"].as_str().unwrap_or_default();
            let Some(theirs) = layer(theirs_name) else {
                continue;
            };
            let is_dev = dependency["kind"].as_str() == Some("dev");
            let allowed = theirs < own || (is_dev && theirs_name == TESTKIT);
            if !allowed {
                let kind = dependency["kind"].as_str().unwrap_or("normal");
                report.violations.push(format!(
                    "{name} (layer {own}) -> {theirs_name} (layer {theirs}, {kind} dependency)"
                ));
            }
        }
        report.checked.insert(name.to_owned(), own);
    }
    report
}

/// Crates that do I/O; `sable-core` must depend on none of them.
const IO_CRATES: [&str; 12] = [
    "tokio",
    "async-nats",
    "sqlx",
    "reqwest",
    "axum",
    "hyper",
    "hyper-util",
    "tonic",
    "rmcp",
    "opentelemetry-otlp",
    "nix",
    "tracing-subscriber",
];

/// `std` modules that do I/O; `sable-core`'s sources must not name them.
const IO_MODULES: [&str; 5] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::io::stdin",
];

/// `sable-core` is pure types: no I/O crate among its dependencies (any kind but dev) and
/// no I/O module of `std` in its sources (`sources` maps a file to its text).
pub fn check_core_is_pure(metadata: &Value, sources: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut violations = Vec::new();
    for package in packages(metadata).filter(|package| package["name"] == "sable-core") {
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let name = dependency["name"].as_str().unwrap_or_default();
            if IO_CRATES.contains(&name) && dependency["kind"].as_str() != Some("dev") {
                violations.push(format!("sable-core depends on the I/O crate {name}"));
            }
        }
    }
    for (path, text) in sources {
        for module in IO_MODULES.iter().filter(|module| text.contains(*module)) {
            violations.push(format!("{} uses {module}", path.display()));
        }
    }
    violations
}

/// Every workspace member has a `###` heading in the architecture document naming its
/// folder (`crates/sable-core`).
pub fn check_code_map(member_dirs: &[String], architecture: &str) -> Vec<String> {
    let headings: Vec<&str> = architecture
        .lines()
        .filter(|line| line.starts_with("### "))
        .collect();
    member_dirs
        .iter()
        .filter(|dir| {
            !headings
                .iter()
                .any(|heading| heading.contains(&format!("`{dir}`")))
        })
        .map(|dir| format!("docs/ARCHITECTURE.md has no code-map heading for `{dir}`"))
        .collect()
}

/// Addresses that are deliberately never listened on, so they may appear in tests.
const UNREACHABLE_ADDRESSES: [&str; 1] = [
    // `sable dev` must not need NATS: its tests point it at a port nothing serves.
    "127.0.0.1:1",
];

/// Tests bind port 0 and read the address back; a literal port collides with whatever
/// else runs on the machine. `sources` are test files.
pub fn check_no_literal_ports(sources: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let literal = regex::Regex::new(r"(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):([0-9]+)")
        .expect("a valid pattern");
    let mut violations = Vec::new();
    for (path, text) in sources {
        for (number, line) in text.lines().enumerate() {
            for found in literal.captures_iter(line) {
                let address = &found[0];
                if &found[2] != "0" && !UNREACHABLE_ADDRESSES.contains(&address) {
                    violations.push(format!(
                        "{}:{}: literal port in {address}",
                        path.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    violations
}

/// `map_err(|_| …)` places whose dropped cause carries nothing worth keeping, each with
/// the reason: (file, text that follows `|_|` on the line, reason).
pub const JUSTIFIED_DROPPED_CAUSES: [(&str, &str, &str); 17] = [
    (
        "crates/sable-store/src/secrets.rs",
        "SecretsError::InvalidKey",
        "a key that is not 32 base64 bytes; the decoder's detail could echo key material",
    ),
    (
        "crates/sable-store/src/secrets.rs",
        "SecretsError::Unsealable",
        "AEAD failures are opaque by design; saying more helps an attacker",
    ),
    (
        "crates/sable-core/src/schedule.rs",
        "{",
        "an unknown IANA zone name; the message names it",
    ),
    (
        "crates/sable-core/src/schedule.rs",
        "refuse(format!(\"@every",
        "an interval too long for a time delta; the message says so",
    ),
    (
        "crates/sable-store/src/cron.rs",
        "corrupt()",
        "a stored target that is not what Sable writes; the decode error names the column",
    ),
    (
        "crates/sable-tools/src/builtin/automation.rs",
        "ToolError::InvalidArguments",
        "an id the model sent that is not a task id; the message says so",
    ),
    (
        "services/gateway/src/routes/cron.rs",
        "ApiError::NotFound",
        "a malformed id is as unknown as a missing one",
    ),
    (
        "crates/sable-tools/src/registry.rs",
        "ToolError::Timeout",
        "tokio's Elapsed says only that time ran out",
    ),
    (
        "crates/sable-tools/src/http_fetch.rs",
        "ToolError::Timeout",
        "tokio's Elapsed says only that time ran out",
    ),
    (
        "crates/sable-tools/src/http_fetch.rs",
        "invalid(format!(\"'{name}' is not a valid header name\"",
        "the message names the bad header; the parser's error adds nothing",
    ),
    (
        "crates/sable-tools/src/http_fetch.rs",
        "failed(\"with a Location that is not text\"",
        "the header's bytes are not text; that is the whole cause",
    ),
    (
        "crates/sable-tools/src/builtin/time.rs",
        "{",
        "an unknown IANA zone name; the message names it",
    ),
    (
        "crates/sable-tools/src/builtin/session.rs",
        "{",
        "an id the model sent that is not a session id; the message says so",
    ),
    (
        "crates/sable-core/src/ids.rs",
        "IdParseError",
        "IdParseError names the kind and the input",
    ),
    (
        "services/gateway/src/routes/sessions.rs",
        "ApiError",
        "a malformed id or cursor is as unknown as a missing one (404 / 422)",
    ),
    (
        "services/gateway/src/routes/approvals.rs",
        "ApiError::NotFound",
        "a malformed id is as unknown as a missing one",
    ),
    (
        "services/gateway/src/routes/turns.rs",
        "ApiError::NotFound",
        "a malformed id is as unknown as a missing one",
    ),
];

/// Finds `map_err(|_|` that is not on the justified list, and list entries that no
/// longer match anything (so the list cannot rot). `sources` are paths relative to the
/// workspace root.
pub fn check_dropped_causes(
    sources: &BTreeMap<PathBuf, String>,
    justified: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut used = vec![false; justified.len()];
    let mut violations = Vec::new();
    for (path, text) in sources {
        let file = path.to_string_lossy().replace('\\', "/");
        for (number, line) in text.lines().enumerate() {
            let Some(at) = line.find("map_err(|_|") else {
                continue;
            };
            let rest = line[at + "map_err(|_|".len()..].trim_start();
            let entry = justified.iter().position(|(justified_file, start, _)| {
                file == *justified_file && rest.starts_with(start)
            });
            match entry {
                Some(index) => used[index] = true,
                None => violations.push(format!(
                    "{file}:{}: map_err(|_| …) drops the cause; keep it as a source, name the \
                     discarded value (`|_elapsed|`), or justify it in JUSTIFIED_DROPPED_CAUSES",
                    number + 1
                )),
            }
        }
    }
    for (index, (file, start, _)) in justified.iter().enumerate() {
        if !used[index] {
            violations.push(format!(
                "stale JUSTIFIED_DROPPED_CAUSES entry: {file} `{start}`"
            ));
        }
    }
    violations
}

/// The workspace's packages from `cargo metadata --no-deps`.
fn packages(metadata: &Value) -> impl Iterator<Item = &Value> {
    metadata["packages"].as_array().into_iter().flatten()
}

/// Each workspace member's folder relative to `root` (`crates/sable-core`).
pub fn member_dirs(metadata: &Value, root: &Path) -> Vec<String> {
    packages(metadata)
        .filter_map(|package| package["manifest_path"].as_str())
        .filter_map(|manifest| {
            Path::new(manifest)
                .parent()?
                .strip_prefix(root)
                .ok()
                .map(Path::to_path_buf)
        })
        .map(|dir| dir.to_string_lossy().replace('\\', "/"))
        .collect()
}

/// Every `.rs` file under `dir` (recursively), by path relative to `root`.
pub fn rust_sources(root: &Path, dir: &Path) -> std::io::Result<BTreeMap<PathBuf, String>> {
    let mut sources = BTreeMap::new();
    collect(root, &root.join(dir), &mut sources)?;
    Ok(sources)
}

fn collect(
    root: &Path,
    dir: &Path,
    sources: &mut BTreeMap<PathBuf, String>,
) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            collect(root, &path, sources)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            sources.insert(relative, std::fs::read_to_string(&path)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn metadata(packages: Value) -> Value {
        json!({"packages": packages})
    }

    fn one(path: &str, text: &str) -> BTreeMap<PathBuf, String> {
        BTreeMap::from([(PathBuf::from(path), text.to_owned())])
    }

    #[test]
    fn an_upward_or_sideways_edge_is_a_violation_and_a_testkit_dev_dependency_is_not() {
        let workspace = metadata(json!([
            {"name": "sable-store", "dependencies": [
                {"name": "sable-core", "kind": null},
                {"name": "sable-testkit", "kind": "dev"},
                {"name": "sable-bus", "kind": null},
            ]},
            {"name": "sable-core", "dependencies": [{"name": "sable-gateway", "kind": "dev"}]},
            {"name": "sable-gateway", "dependencies": [{"name": "sable-testkit", "kind": null}]},
        ]));
        let report = check_layering(&workspace);
        assert_eq!(report.checked.len(), 3);
        assert_eq!(report.violations.len(), 3, "{:?}", report.violations);
        assert!(report.violations[0].contains("sable-store (layer 1) -> sable-bus"));
        assert!(report.violations[1].contains("dev dependency"));
        assert!(report.violations[2].contains("sable-gateway (layer 3) -> sable-testkit"));
    }

    #[test]
    fn a_crate_without_a_layer_is_a_violation() {
        let report = check_layering(&metadata(
            json!([{"name": "sable-new", "dependencies": []}]),
        ));
        assert_eq!(report.violations.len(), 1);
    }

    #[test]
    fn core_may_not_depend_on_an_io_crate_or_use_std_io_modules() {
        let workspace = metadata(json!([{"name": "sable-core", "dependencies": [
            {"name": "tokio", "kind": null},
            {"name": "tokio", "kind": "dev"},
            {"name": "uuid", "kind": null},
        ]}]));
        let sources = one(
            "crates/sable-core/src/ids.rs",
            "fn f() { std::fs::read(\"x\"); }",
        );
        let violations = check_core_is_pure(&workspace, &sources);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(check_core_is_pure(&metadata(json!([])), &one("a.rs", "use std::fmt;")).is_empty());
    }

    #[test]
    fn a_member_without_a_code_map_heading_is_a_violation() {
        let architecture = "### `crates/sable-core`\ntext\n### `services/cron`, `services/x`\n";
        let members = [
            "crates/sable-core".to_owned(),
            "services/x".to_owned(),
            "crates/sable-bus".to_owned(),
        ];
        assert_eq!(
            check_code_map(&members, architecture),
            ["docs/ARCHITECTURE.md has no code-map heading for `crates/sable-bus`"]
        );
    }

    #[test]
    fn a_literal_port_in_a_test_is_a_violation_but_port_zero_is_not() {
        let sources = one(
            "tests/e2e/x.rs",
            "let a = \"127.0.0.1:0\";\nlet b = \"127.0.0.1:5432\";\nlet c = \"nats://127.0.0.1:1\";",
        );
        let violations = check_no_literal_ports(&sources);
        assert_eq!(
            violations,
            ["tests/e2e/x.rs:2: literal port in 127.0.0.1:5432"]
        );
    }

    #[test]
    fn an_unjustified_dropped_cause_and_a_stale_justification_are_violations() {
        let sources = one(
            "src/a.rs",
            "x.map_err(|_| Error::Timeout)?;\ny.map_err(|_| Other)?;\nz.map_err(|_elapsed| T)?;",
        );
        let justified = [
            ("src/a.rs", "Error::Timeout", "why"),
            ("src/b.rs", "Gone", "why"),
        ];
        let violations = check_dropped_causes(&sources, &justified);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].starts_with("src/a.rs:2:"));
        assert!(violations[1].contains("stale"));
    }
}
