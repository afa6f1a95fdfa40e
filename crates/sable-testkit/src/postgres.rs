//! A private Postgres cluster per test (`initdb` in a temporary directory, a port of its
//! own), which a test may stop and start again: the shared server is never restarted.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Where the server binaries are looked for when `SABLE_TEST_PG_BIN` is unset.
const DEBIAN_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running (or stopped) Postgres cluster keeping its data across restarts.
pub struct PostgresCluster {
    pub port: u16,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    /// Postgres refuses to run as root; as root the cluster runs as this user.
    run_as: Option<User>,
    child: Option<Child>,
}

impl PostgresCluster {
    /// Creates the cluster (trust authentication, user `postgres`) and starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let bin_dir = std::env::var_os("SABLE_TEST_PG_BIN")
            .map_or_else(|| PathBuf::from(DEBIAN_PG_BIN), PathBuf::from);
        anyhow::ensure!(
            bin_dir.join("initdb").is_file(),
            "no initdb in {} (install postgresql or set SABLE_TEST_PG_BIN)",
            bin_dir.display()
        );
        let run_as = if Uid::effective().is_root() {
            Some(User::from_name("postgres")?.ok_or_else(|| {
                anyhow::anyhow!(
                    "running as root and there is no 'postgres' user to run Postgres as"
                )
            })?)
        } else {
            None
        };
        let data_dir =
            std::env::temp_dir().join(format!("sable-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir)?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&data_dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }
        let mut cluster = Self {
            port: crate::free_port()?,
            data_dir,
            bin_dir,
            run_as,
            child: None,
        };
        let initdb = cluster
            .command("initdb")
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(&cluster.data_dir)
            .output()?;
        anyhow::ensure!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        cluster.restart().await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on the same port and data after [`PostgresCluster::stop`], and
    /// waits until it accepts queries (not only connections).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.data_dir.with_extension("log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.data_dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let url = self.admin_url();
        crate::wait_for(
            "the private Postgres to accept queries",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move { PgConnection::connect(&url).await.ok() }
            },
        )
        .await?;
        Ok(())
    }

    /// Stops the server the way a crash would (immediate shutdown: no checkpoint, WAL
    /// replayed at the next start) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            }
            let _ = child.wait();
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        if let Some(user) = &self.run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command.current_dir(self.data_dir.parent().unwrap_or(Path::new("/")));
        command
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.data_dir.with_extension("log"));
    }
}
