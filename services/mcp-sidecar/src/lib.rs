//! The MCP sidecar role: owns every connection to external MCP servers (stdio child
//! processes and streamable HTTP sessions) and serves them to workers over gRPC
//! (`proto/sable/v1/mcp.proto`).
//!
//! Connections to the shared servers of `config/mcp.toml` are opened at start and kept:
//! one per server, never one per call. An org's own servers (streamable HTTP only) come
//! with the requests made for that org; their connections are kept apart per org, opened
//! on demand and closed when idle or superseded (`orgs.rs`). A dropped connection is
//! reconnected with backoff and jitter; a server's `notifications/tools/list_changed`
//! refreshes its tools and bumps the catalog revision workers cache by; every call has a
//! deadline, and passing it sends the MCP server a cancellation. `config/mcp.toml` is
//! parsed strictly ([`McpConfig`]).
//!
//! Depends on `sable-proto` (the gRPC contract), `sable-telemetry` (spans, metrics) and
//! rmcp; never on the store, the bus or another service. The worker-side client lives in
//! `sable-tools`.

mod config;
mod connection;
mod grpc;
mod orgs;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::StatusCode;
use sable_proto::v1::mcp_sidecar_server::McpSidecarServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, McpConfig, ServerConfig, ServerSummary, TransportConfig};
pub use connection::{Backoff, ConnectionState};

use crate::connection::Server;
use crate::grpc::{Servers, SidecarService};
use crate::orgs::OrgConnections;

/// What the sidecar serves and how it reconnects.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub mcp: McpConfig,
    pub reconnect: Backoff,
    /// An org's server connection that no request used for this long is closed.
    pub org_idle_timeout: Duration,
}

impl SidecarConfig {
    pub fn new(mcp: McpConfig) -> Self {
        Self {
            mcp,
            reconnect: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            org_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The sockets the sidecar serves on, bound by the caller.
pub struct SidecarListeners {
    /// gRPC (`sable.v1.McpSidecar`).
    pub grpc: TcpListener,
    /// `/healthz`, `/readyz` and `/metrics`; `None` when the process serves them
    /// elsewhere (`sable dev`).
    pub http: Option<TcpListener>,
}

/// Connects to every enabled server and serves gRPC until `shutdown`, then closes the
/// connections (stdio children are stopped).
pub async fn run(
    config: SidecarConfig,
    listeners: SidecarListeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Revisions start from the clock, so a restarted sidecar never repeats one a worker
    // still caches.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| {
            u64::try_from(since.as_millis()).unwrap_or(1) << 10
        });
    let revision = Arc::new(AtomicU64::new(start));
    let by_name: BTreeMap<String, Arc<Server>> = config
        .mcp
        .servers
        .into_iter()
        .map(|server| {
            (
                server.name.clone(),
                Arc::new(Server::new(server, revision.clone())),
            )
        })
        .collect();
    let orgs = Arc::new(OrgConnections::new(
        revision.clone(),
        config.reconnect,
        config.org_idle_timeout,
        shutdown.clone(),
    ));
    let idle_closer = tokio::spawn(orgs.clone().close_idle_until_shutdown());
    let servers = Arc::new(Servers {
        by_name,
        revision,
        orgs,
    });
    let supervisors: Vec<_> = servers
        .by_name
        .values()
        .map(|server| {
            tokio::spawn(connection::supervise(
                server.clone(),
                config.reconnect,
                shutdown.clone(),
            ))
        })
        .collect();
    tracing::info!(
        servers = servers.by_name.len(),
        addr = ?listeners.grpc.local_addr().ok(),
        "MCP sidecar serving gRPC"
    );
    let http = listeners
        .http
        .map(|listener| tokio::spawn(serve_http(listener, servers.clone(), shutdown.clone())));
    let service = SidecarService {
        servers: servers.clone(),
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(McpSidecarServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    let _ = idle_closer.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    grpc?;
    Ok(())
}

/// `/healthz` (the process is up), `/readyz` (every enabled server has had its first
/// connection attempt) and `/metrics`.
async fn serve_http(listener: TcpListener, servers: Arc<Servers>, shutdown: CancellationToken) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { sable_telemetry::render_metrics() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let servers = servers.clone();
                async move {
                    let starting = servers
                        .by_name
                        .values()
                        .filter(|server| {
                            server.view().state == ConnectionState::Connecting
                                && server.view().reconnects == 0
                        })
                        .count();
                    if starting == 0 {
                        (StatusCode::OK, "ready".to_owned())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("{starting} MCP servers are still connecting"),
                        )
                    }
                }
            }),
        );
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "the sidecar's health endpoint stopped");
    }
}
