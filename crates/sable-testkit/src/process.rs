//! A child process of the `sable` binary (or any other), with its stdout readable line by
//! line and its stderr kept in a log file for when a test fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Runs `program args…` to completion in the workspace root with `env` added, and
/// returns its stdout trimmed; a non-zero exit is an error carrying its stderr.
pub async fn run_to_completion(
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .current_dir(crate::workspace_root())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{} {} failed: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// A running child. Killed when dropped.
pub struct ChildProcess {
    pub name: String,
    pub log_path: PathBuf,
    child: Child,
    stdout_lines: mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    /// Starts `program args…` in `dir` with `env` added to the inherited environment.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_without(name, program, args, env, &[], dir)
    }

    /// Like [`ChildProcess::spawn`], with the variables named in `removed` taken out of
    /// the inherited environment.
    pub fn spawn_without(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        removed: &[&str],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log_dir = std::env::temp_dir().join("sable-test-logs");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = std::fs::File::create(&log_path)?;
        let mut command = Command::new(program);
        for variable in removed {
            command.env_remove(variable);
        }
        let mut child = command
            .args(args)
            .envs(
                env.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            )
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {}: {error}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, stdout_lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            log_path,
            child,
            stdout_lines,
        })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub async fn wait_for_line(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let wait = async {
            while let Some(line) = self.stdout_lines.recv().await {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Some(rest.trim().to_owned());
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(rest)) => Ok(rest),
            _ => anyhow::bail!(
                "{} printed no line starting with {prefix:?}; its log:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns whether it exited 0.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            kill(Pid::from_raw(pid), Signal::SIGTERM)?;
        }
        let status = tokio::time::timeout(timeout, self.child.wait()).await??;
        Ok(status.success())
    }

    /// The end of the process's stderr log, for failure messages, after the warnings,
    /// errors and panics logged before it: a flood of routine lines at the end (a
    /// sweeper waking a stuck turn every second) would otherwise hide what went wrong.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let (earlier, tail) = lines.split_at(lines.len().saturating_sub(40));
        let troubles: Vec<&str> = earlier
            .iter()
            .filter(|line| {
                line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked")
            })
            .take(20)
            .copied()
            .collect();
        if troubles.is_empty() {
            return tail.join("\n");
        }
        format!(
            "[warnings and errors before the last 40 lines]\n{}\n[the last 40 lines]\n{}",
            troubles.join("\n"),
            tail.join("\n")
        )
    }
}

/// Resident set size of a process in KiB, read from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
