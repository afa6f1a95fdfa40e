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

/// A terminal of its own: `tmux` on a private socket, so `sable chat` runs on a real pty.
struct Terminal {
    socket: String,
}

impl Terminal {
    async fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn start(command: &str) -> anyhow::Result<Self> {
        let terminal = Self {
            socket: format!("sable-{}", uuid::Uuid::new_v4().simple()),
        };
        terminal
            .tmux(&[
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                "chat",
                command,
            ])
            .await?;
        terminal
            .tmux(&["set-option", "-t", "chat", "remain-on-exit", "on"])
            .await?;
        Ok(terminal)
    }

    async fn type_line(&self, text: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", "chat", "-l", text]).await?;
        self.tmux(&["send-keys", "-t", "chat", "Enter"])
            .await
            .map(|_| ())
    }

    /// Waits until the screen shows `text`, and returns the screen.
    async fn wait_for(&self, text: &str) -> anyhow::Result<String> {
        sable_testkit::wait_for(
            &format!("the terminal to show {text:?}"),
            crate::support::TURN_TIMEOUT,
            || async {
                let screen = self
                    .tmux(&["capture-pane", "-p", "-t", "chat", "-S", "-100"])
                    .await
                    .ok()?;
                screen.contains(text).then_some(screen)
            },
        )
        .await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[tokio::test]
async fn sable_chat_prints_its_session_and_resumes_it_with_the_history() -> anyhow::Result<()> {
    let stack = DevStack::start().await?;
    let chat = |extra: &str| {
        format!(
            "SABLE_API_KEY={} {} chat --url {} {extra}; echo \"chat exited $?\"",
            shell_quote(&stack.key),
            shell_quote(&sable_binary().display().to_string()),
            shell_quote(&stack.url),
        )
    };
    let first = Terminal::start(&chat("")).await?;
    first.type_line("my name is Ada").await?;
    let screen = first.wait_for("[session ").await?;
    let session_id = screen
        .split("[session ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a session id")
        .to_owned();
    assert!(screen.contains("echo: my name is Ada"), "{screen}");
    drop(first);

    let resumed = Terminal::start(&chat(&format!("--session {session_id}"))).await?;
    resumed
        .wait_for(&format!("Resuming session {session_id}"))
        .await?;
    resumed.type_line("what is my name?").await?;
    resumed.wait_for("echo: what is my name?").await?;

    let (_, history) = stack
        .fetch(0, &format!("/v1/sessions/{session_id}/messages"))
        .await?;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "my name is Ada",
            "echo: my name is Ada",
            "what is my name?",
            "echo: what is my name?"
        ]
    );
    // The provider saw the first exchange when answering the resumed chat.
    let last = stack.provider.requests().pop().unwrap();
    assert!(last.to_string().contains("my name is Ada"), "{last}");
    Ok(())
}

#[tokio::test]
async fn sable_chat_exits_non_zero_when_the_session_or_the_key_is_wrong() -> anyhow::Result<()> {
    let stack = DevStack::start().await?;
    for (key, session) in [
        (stack.key.clone(), uuid::Uuid::now_v7().to_string()),
        (
            format!("sable_{}_{}", "0".repeat(12), "0".repeat(48)),
            String::new(),
        ),
    ] {
        let mut command = tokio::process::Command::new(sable_binary());
        command
            .args(["chat", "--url", &stack.url])
            .env("SABLE_API_KEY", &key);
        if !session.is_empty() {
            command.args(["--session", &session]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("piped");
            // A write may fail once chat has already exited; the exit status tells.
            let _ = stdin.write_all(b"hello\nhello again\n").await;
        }
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await??;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "chat exited 0: {stderr}");
        assert!(stderr.contains("error:"), "{stderr}");
    }
    Ok(())
}
