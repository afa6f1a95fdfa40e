//! A private `nats-server` with JetStream per test, which a test may stop and restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) NATS server on a port of its own, keeping its JetStream files
/// across restarts.
pub struct NatsServer {
    pub port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server` (from `PATH`, or `SABLE_TEST_NATS_SERVER`).
    pub async fn start() -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let store_dir =
            std::env::temp_dir().join(format!("sable-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store_dir)?;
        let mut server = Self {
            port,
            store_dir,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store after [`NatsServer::stop`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let binary =
            std::env::var("SABLE_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                anyhow::anyhow!("cannot start {binary}: {error} (install nats-server)")
            })?;
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        crate::wait_for(
            "nats-server to accept connections",
            Duration::from_secs(10),
            || {
                let address = address.clone();
                async move { tokio::net::TcpStream::connect(address).await.ok() }
            },
        )
        .await?;
        Ok(())
    }

    /// Stops the server (SIGTERM, then waits for it to exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
