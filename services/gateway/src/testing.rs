//! The gateway's own router and accept loop for in-process tests; not part of its API.

use std::sync::Arc;

use axum::Router;
use sable_bus::Bus;
use sable_runtime::ChangeFeed;
use sable_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{GatewayConfig, HttpLimits};

/// The router [`crate::run`] serves, on state built the same way, with nothing in the
/// background: no dispatcher and no delivery sweeper. The bus topology is the caller's
/// to ensure. Cancelling `shutdown` makes waiting requests answer at once, as in `run`.
pub fn router(
    config: GatewayConfig,
    store: Store,
    bus: Bus,
    shutdown: CancellationToken,
) -> Router {
    crate::router(crate::app_state(config, store, bus, shutdown))
}

/// [`router`], with the change feed its key cache and org configurations follow: `run`
/// polls it every second; a test polls it when it chooses.
pub fn router_and_feed(
    config: GatewayConfig,
    store: Store,
    bus: Bus,
    shutdown: CancellationToken,
) -> (Router, Arc<ChangeFeed>) {
    let state = crate::app_state(config, store, bus, shutdown);
    let feed = state.change_feed.clone();
    (crate::router(state), feed)
}

/// Serves `router` on `listener` with the gateway's accept loop and connection limits
/// until `shutdown` is cancelled, then drains as `run` does.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) {
    crate::serve::serve(listener, router, limits, shutdown).await;
}
