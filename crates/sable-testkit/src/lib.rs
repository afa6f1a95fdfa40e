//! Test support for Sable: fakes of outside services that speak their real wire protocol
//! over sockets, and harness pieces that give each test its own database, NATS server
//! and processes.
//!
//! Use it from tests and benchmarks only. It may depend on `sable-store` (to migrate a
//! fresh database) and must never be a dependency of a library or service crate.

mod commit_counter;
mod database;
mod fake_anthropic;
mod fake_feishu;
mod fake_feishu_ws;
pub mod fake_mcp;
mod fake_provider;
mod fake_webhook;
mod nats;
mod otlp_receiver;
pub mod pg_wire;
mod poll;
mod postgres;
mod process;
mod proxy;

pub use commit_counter::CommitCounter;
pub use database::{TestDatabase, shared_admin_url};
pub use fake_feishu::{
    FakeFeishu, FeishuCallback, FeishuEventSender, FeishuMessage, FeishuRequest,
};
pub use fake_feishu::{FeishuCardUpdate, button_value, card_text};
pub use fake_feishu_ws::{FakeFeishuWs, FeishuWsAck, FeishuWsConnection};
pub use fake_mcp::{FakeMcpServer, FakeMcpState, fake_mcp_binary};
pub use fake_provider::{FakeProvider, FakeToolCall, Script};
pub use fake_webhook::{FakeWebhook, WebhookLog};
pub use nats::NatsServer;
pub use otlp_receiver::{ExportedSpan, OtlpReceiver};
pub use pg_wire::RoundTripCounter;
pub use poll::{eventually, wait_for};
pub use postgres::PostgresCluster;
pub use process::{ChildProcess, rss_kib, run_to_completion};
pub use proxy::TcpProxy;

/// The workspace root, for finding `agents/`, `config/` and the like.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts (and
/// restarts on the same port).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
