//! The HTTP server under the router, with the limits that keep slow or hostile clients
//! from pinning the gateway: a deadline for a request's headers (which also closes idle
//! keep-alive connections), a cap on open connections, and a bounded drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The gateway's connection-level limits (documented in `config/sable.toml`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A connection that has not sent a whole request head this long after it opened,
    /// or after its previous response, is closed.
    pub header_timeout: Duration,
    /// A request body that has not arrived whole this long after its headers is refused
    /// with 408.
    pub body_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// At shutdown, requests still running this long after the listener closed are cut.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The largest request head (request line and headers) hyper buffers. The router refuses
/// smaller excesses itself with JSON 414 / 431 (`limits.rs`); past this, hyper answers a
/// bare 431 and closes the connection.
const MAX_HEAD_BUFFER_BYTES: usize = 128 * 1024;

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets running requests
/// finish for at most `limits.shutdown_grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER_BYTES);
    while let Some(permit) = next_permit(&permits, &shutdown).await {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: pause
                    // briefly instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        // Handlers that audit a request (a failed authentication) read the peer from here.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "requests still running after the shutdown grace; closing them"
        );
    }
}

async fn next_permit(
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        permit = permits.clone().acquire_owned() => permit.ok(),
    }
}
