//! The README as a newcomer types it: its first command runs the product and answers, and
//! every `sable` command its code blocks show parses against the binary.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use sable_testkit::{ChildProcess, workspace_root};
use serde_json::{Value, json};

use crate::support::{READY_TIMEOUT, sable_binary};

/// Every line of the README's ```sh blocks, comments and continuations removed.
fn readme_commands() -> anyhow::Result<Vec<String>> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    let mut commands: Vec<String> = Vec::new();
    let mut in_shell_block = false;
    let mut continued = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_shell_block = !in_shell_block && line.trim_start().trim_start_matches('`') == "sh";
            continue;
        }
        if !in_shell_block {
            continue;
        }
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let code = code.trim();
        let continues = code.ends_with('\\');
        let code = code
            .trim_end_matches('\\')
            .trim()
            .trim_end_matches('&')
            .trim();
        match commands.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(code);
            }
            _ if !code.is_empty() => commands.push(code.to_owned()),
            _ => {}
        }
        continued = continues;
    }
    anyhow::ensure!(!commands.is_empty(), "the README shows no shell commands");
    Ok(commands)
}

/// The `cargo metadata` of the workspace (no dependencies).
async fn cargo_metadata() -> anyhow::Result<Value> {
    let output = tokio::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "cargo metadata failed");
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The binaries `cargo run` without `-p` picks among: those of the default members.
fn default_member_binaries(metadata: &Value) -> Vec<String> {
    let defaults: Vec<&Value> = metadata["workspace_default_members"]
        .as_array()
        .map(|members| members.iter().collect())
        .unwrap_or_default();
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| defaults.contains(&&package["id"]))
        .flat_map(|package| package["targets"].as_array().cloned().unwrap_or_default())
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.contains(&json!("bin")))
        })
        .filter_map(|target| target["name"].as_str().map(str::to_owned))
        .collect()
}

/// Copies what `sable dev` reads from the working directory into a fresh one, so the
/// test runs it as in a new clone: no `./data` yet.
fn fresh_checkout_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sable-readme-{}", uuid::Uuid::new_v4().simple()));
    for folder in ["config", "agents", "skills"] {
        copy_dir(&workspace_root().join(folder), &dir.join(folder))?;
    }
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_readmes_first_command_runs_sable_dev_and_the_echo_model_answers() -> anyhow::Result<()>
{
    sable_llm::install_crypto_provider();
    let first = readme_commands()?.remove(0);
    assert_eq!(
        first, "cargo run --release -- dev",
        "the README's first command changed"
    );
    // `cargo run` without `-p` must resolve to exactly one binary: `sable`.
    assert_eq!(default_member_binaries(&cargo_metadata().await?), ["sable"]);
    let args: Vec<&str> = first
        .split_once(" -- ")
        .map(|(_, args)| args.split_whitespace().collect())
        .unwrap_or_default();
    let dir = fresh_checkout_dir()?;
    // No provider variables: the newcomer has none. Only the port is ours (8080 may be
    // taken on a test machine).
    let mut dev = ChildProcess::spawn_without(
        "readme-dev",
        &sable_binary(),
        &args,
        &[("SABLE_GATEWAY_ADDR".into(), "127.0.0.1:0".into())],
        &[
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY",
            "SABLE_DATABASE_URL",
            "SABLE_MODEL",
        ],
        &dir,
    )?;
    let banner = dev
        .wait_for_line("*** No model provider is configured", READY_TIMEOUT)
        .await?;
    let url = dev
        .wait_for_line("sable gateway listening on", READY_TIMEOUT)
        .await?;
    let key = dev.wait_for_line("API key:", READY_TIMEOUT).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let reply: Value = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(&key)
        .json(&json!({"text": "hello", "wait": true}))
        .send()
        .await?
        .json()
        .await?;
    let turn_id = reply["turn_id"].as_str().unwrap_or_default();
    let turn = http
        .get(format!("{url}/v1/turns/{turn_id}"))
        .bearer_auth(&key)
        .send()
        .await?;

    assert!(banner.contains("echo model"), "{banner}");
    assert_eq!(
        reply["reply"]["text"],
        "echo: hello",
        "{reply}\n{}",
        dev.log_tail()
    );
    assert_eq!(turn.status(), StatusCode::OK);
    let turn: Value = turn.json().await?;
    assert_eq!(turn["provider_calls"][0]["model"], "echo", "{turn}");
    assert!(
        dir.join("data/sable.db").is_file(),
        "the store is ./data as the README says"
    );
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The arguments `sable` gets from one README line, if the line runs `sable`.
fn sable_arguments(command: &str) -> Option<Vec<String>> {
    let inner = command
        .find("$(")
        .map_or(command, |start| command[start + 2..].trim_end_matches(')'));
    let words = shell_words(inner);
    let words: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .skip_while(|word| word.contains('=') && !word.starts_with('-'))
        .collect();
    let args = match words.as_slice() {
        ["sable", args @ ..] => args.to_vec(),
        ["cargo", "run", rest @ ..] if !rest.contains(&"-p") => {
            let at = rest.iter().position(|word| *word == "--")?;
            rest[at + 1..].to_vec()
        }
        _ => return None,
    };
    Some(
        args.into_iter()
            .map(|word| {
                // Shell variables stand for values printed earlier, e.g. an org id.
                if word.starts_with('$') {
                    uuid::Uuid::nil().to_string()
                } else {
                    word.to_owned()
                }
            })
            .collect(),
    )
}

/// Splits a command line as a shell would for simple quoting: `'…'` and `"…"` group
/// words and are removed.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for character in line.chars() {
        match (quote, character) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(character);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[tokio::test]
async fn every_sable_command_in_the_readme_parses_against_the_binary() -> anyhow::Result<()> {
    let commands = readme_commands()?;
    let mut checked = 0;
    for command in &commands {
        let Some(mut args) = sable_arguments(command) else {
            continue;
        };
        args.push("--help".into());
        let output = tokio::process::Command::new(sable_binary())
            .args(&args)
            .current_dir(workspace_root())
            .output()
            .await?;
        assert!(
            output.status.success(),
            "`{command}` does not parse: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    // dev (twice), migrate, org create, key create, worker, gateway.
    assert!(
        checked >= 7,
        "only {checked} sable commands found in {commands:?}"
    );
    // Other binaries the README runs through cargo exist where it says.
    let metadata = cargo_metadata().await?;
    for command in commands
        .iter()
        .filter(|command| command.contains(" --bin "))
    {
        let words: Vec<&str> = command.split_whitespace().collect();
        let value_of = |flag: &str| {
            words
                .iter()
                .position(|word| *word == flag)
                .and_then(|at| words.get(at + 1))
                .copied()
        };
        let (package, binary) = (value_of("-p"), value_of("--bin"));
        let found = metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|candidate| {
                Some(candidate["name"].as_str().unwrap_or_default()) == package
                    && candidate["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|target| target["name"].as_str() == binary)
            });
        assert!(
            found,
            "`{command}`: no binary {binary:?} in package {package:?}"
        );
    }
    Ok(())
}

/// `docker` and `helm` lines cannot run here (no container engine, no cluster): what can
/// be checked is that each names files that exist, and that the one-command start is the
/// Compose file `deploy::the_compose_stack_validates_against_the_compose_specification`
/// validates.
#[tokio::test]
async fn every_docker_and_helm_command_in_the_readme_names_files_that_exist() -> anyhow::Result<()>
{
    let commands = readme_commands()?;
    let deployment: Vec<&String> = commands
        .iter()
        .filter(|command| command.starts_with("docker ") || command.starts_with("helm "))
        .collect();
    for command in &deployment {
        let words = shell_words(command);
        let after_flag = words
            .windows(2)
            .filter(|pair| pair[0] == "-f")
            .map(|pair| pair[1].clone());
        let chart = words
            .iter()
            .filter(|word| word.starts_with("helm/"))
            .cloned();
        for path in after_flag.chain(chart) {
            assert!(
                workspace_root().join(&path).exists(),
                "`{command}` names {path}, which does not exist"
            );
        }
    }
    assert!(
        deployment
            .iter()
            .any(|command| command.starts_with("docker compose -f deploy/compose.yaml up")),
        "the README shows no one-command start of deploy/compose.yaml: {deployment:?}"
    );
    assert!(
        deployment
            .iter()
            .any(|command| command.starts_with("helm install ")),
        "the README shows no helm install: {deployment:?}"
    );
    Ok(())
}
