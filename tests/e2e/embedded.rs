//! `sable dev`: one process, no NATS, no Postgres.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Api, DevStack, sable_binary};

#[tokio::test]
async fn sable_dev_answers_with_its_printed_key_and_remembers_the_conversation_after_a_restart()
-> anyhow::Result<()> {
    let mut stack = DevStack::start().await?;
    let conversation = json!({"id": "kept"});

    let (status, first) = stack
        .post(
            0,
            &json!({"text": "remember me", "conversation": conversation, "wait": true}),
        )
        .await?;
    stack.restart().await?;
    let (_, second) = stack
        .post(
            0,
            &json!({"text": "still there?", "conversation": conversation, "wait": true}),
        )
        .await?;

    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["reply"]["text"], "echo: remember me");
    assert_eq!(second["reply"]["text"], "echo: still there?");
    assert_eq!(first["session_id"], second["session_id"]);
    let last_request = stack.provider.requests().pop().unwrap();
    let sent: Vec<&str> = last_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        ["remember me", "echo: remember me", "still there?"],
        "history survived the restart"
    );
    Ok(())
}

#[tokio::test]
async fn sable_dev_without_a_provider_says_exactly_what_to_set() -> anyhow::Result<()> {
    let data_dir =
        std::env::temp_dir().join(format!("sable-dev-{}", uuid::Uuid::new_v4().simple()));
    let output = tokio::process::Command::new(sable_binary())
        .arg("dev")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env(
            "SABLE_DATABASE_URL",
            format!("sqlite://{}/sable.db", data_dir.display()),
        )
        .current_dir(sable_testkit::workspace_root())
        .stdin(Stdio::null())
        .output()
        .await?;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for variable in ["OPENAI_BASE_URL", "OPENAI_API_KEY", "SABLE_MODEL"] {
        assert!(
            stderr.contains(variable),
            "{variable} not named in: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn migrate_and_admin_work_on_a_sqlite_url_as_on_postgres() -> anyhow::Result<()> {
    let data_dir =
        std::env::temp_dir().join(format!("sable-admin-{}", uuid::Uuid::new_v4().simple()));
    let env = vec![(
        "SABLE_DATABASE_URL".to_owned(),
        format!("sqlite://{}/nested/sable.db", data_dir.display()),
    )];

    crate::support::run_sable(&["migrate"], &env).await?;
    let org_id = crate::support::run_sable(&["admin", "org", "create", "acme"], &env).await?;
    let key =
        crate::support::run_sable(&["admin", "key", "create", "--org", &org_id], &env).await?;
    let unknown = crate::support::run_sable(
        &[
            "admin",
            "key",
            "create",
            "--org",
            &uuid::Uuid::new_v4().to_string(),
        ],
        &env,
    )
    .await;

    assert!(org_id.parse::<uuid::Uuid>().is_ok(), "{org_id}");
    assert!(key.starts_with("sable_"), "{key}");
    assert!(
        unknown.is_err_and(|error| error.to_string().contains("not found")),
        "a key for an unknown org is refused"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

#[tokio::test]
async fn sable_chat_streams_a_reply_in_the_terminal() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;

    let stack = DevStack::start().await?;
    let mut chat = tokio::process::Command::new(sable_binary())
        .args(["chat", "--url", &stack.url])
        .env("SABLE_API_KEY", &stack.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = chat.stdin.take().expect("piped");
    stdin.write_all(b"hello from the terminal\n").await?;
    drop(stdin);

    let output =
        tokio::time::timeout(std::time::Duration::from_secs(30), chat.wait_with_output()).await??;

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("echo: hello from the terminal"), "{stdout}");
    Ok(())
}
