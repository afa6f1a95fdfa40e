//! Each org's own MCP servers: connections keyed by (org, server name, spec), opened on
//! the first request that carries the spec, closed when idle or when a newer
//! configuration version of the org no longer names them. Nothing here outlives a
//! request's need: the specs come with the requests, so a restarted sidecar simply opens
//! again what is asked of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sable_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::config::org_server;
use crate::connection::{self, Backoff, Server};

/// Every org's open connections.
pub(crate) struct OrgConnections {
    table: Mutex<HashMap<String, OrgEntry>>,
    revision: Arc<AtomicU64>,
    reconnect: Backoff,
    /// A connection nobody listed or called for this long is closed.
    idle: Duration,
    shutdown: CancellationToken,
}

/// One org's connections and the newest configuration version a request named.
#[derive(Default)]
struct OrgEntry {
    newest_version: i64,
    connections: Vec<OrgConnection>,
}

struct OrgConnection {
    /// Compared whole: a changed URL, header or option is another connection.
    spec: pb::McpServerSpec,
    server: Arc<Server>,
    cancel: CancellationToken,
    last_used: Instant,
}

impl OrgConnection {
    fn close(&self, why: &str) {
        self.cancel.cancel();
        self.server.close(why);
    }
}

/// Why an org's server cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("MCP server '{name}' of the org: {message}")]
pub(crate) struct InvalidOrgServer {
    pub name: String,
    pub message: String,
}

impl OrgConnections {
    pub(crate) fn new(
        revision: Arc<AtomicU64>,
        reconnect: Backoff,
        idle: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            table: Mutex::default(),
            revision,
            reconnect,
            idle,
            shutdown,
        }
    }

    /// The org's servers for a listing at `org.config_version`: each spec's connection,
    /// opened when new; a version newer than any seen first closes the org's connections
    /// it no longer names. Specs named like a shared server (`is_shared`) or invalid are
    /// left out (and logged).
    pub(crate) fn servers_for(
        &self,
        org: &pb::OrgServers,
        is_shared: impl Fn(&str) -> bool,
    ) -> Vec<Arc<Server>> {
        let mut table = self.table.lock().expect("org connections lock");
        let entry = table.entry(org.org_id.clone()).or_default();
        let mut changed = false;
        if org.config_version > entry.newest_version {
            entry.newest_version = org.config_version;
            entry.connections.retain(|connection| {
                let named = org.servers.contains(&connection.spec);
                if !named {
                    tracing::info!(org_id = %org.org_id, server = %connection.spec.name, "closing an org's MCP server its configuration no longer has");
                    connection.close("removed or changed by the org's configuration");
                    changed = true;
                }
                named
            });
        }
        let mut servers = Vec::new();
        for spec in &org.servers {
            if is_shared(&spec.name) {
                tracing::debug!(org_id = %org.org_id, server = %spec.name, "an org's MCP server named like a shared one is ignored");
                continue;
            }
            match self.connection_in(entry, &org.org_id, spec) {
                Ok((server, opened)) => {
                    changed |= opened;
                    servers.push(server);
                }
                Err(error) => {
                    tracing::warn!(org_id = %org.org_id, %error, "an org's MCP server is left out");
                }
            }
        }
        // An org without servers here leaves nothing to remember.
        if entry.connections.is_empty() {
            table.remove(&org.org_id);
        }
        drop(table);
        if changed {
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        servers
    }

    /// The connection a call to the org's server `spec` goes over (opened when new).
    pub(crate) fn server_for_call(
        &self,
        org_id: &str,
        spec: &pb::McpServerSpec,
    ) -> Result<Arc<Server>, InvalidOrgServer> {
        let mut table = self.table.lock().expect("org connections lock");
        let entry = table.entry(org_id.to_owned()).or_default();
        let (server, opened) = self.connection_in(entry, org_id, spec)?;
        drop(table);
        if opened {
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        Ok(server)
    }

    /// The open connection of exactly `spec`, touched; or a new one. True when opened.
    fn connection_in(
        &self,
        entry: &mut OrgEntry,
        org_id: &str,
        spec: &pb::McpServerSpec,
    ) -> Result<(Arc<Server>, bool), InvalidOrgServer> {
        if let Some(connection) = entry
            .connections
            .iter_mut()
            .find(|connection| connection.spec == *spec)
        {
            connection.last_used = Instant::now();
            return Ok((connection.server.clone(), false));
        }
        let config = org_server(spec).map_err(|message| InvalidOrgServer {
            name: spec.name.clone(),
            message,
        })?;
        let server = Arc::new(Server::for_org(config, org_id, self.revision.clone()));
        let cancel = self.shutdown.child_token();
        tokio::spawn(connection::supervise(
            server.clone(),
            self.reconnect,
            cancel.clone(),
        ));
        tracing::info!(org_id = %org_id, server = %spec.name, "opening an org's MCP server");
        entry.connections.push(OrgConnection {
            spec: spec.clone(),
            server: server.clone(),
            cancel,
            last_used: Instant::now(),
        });
        Ok((server, true))
    }

    /// Closes every connection unused for the idle time; returns how many.
    pub(crate) fn close_idle(&self) -> usize {
        let mut closed = 0;
        let mut table = self.table.lock().expect("org connections lock");
        for (org_id, entry) in table.iter_mut() {
            entry.connections.retain(|connection| {
                let idle = connection.last_used.elapsed() >= self.idle;
                if idle {
                    tracing::info!(org_id = %org_id, server = %connection.spec.name, "closing an idle org MCP server");
                    connection.close("closed after being idle");
                    closed += 1;
                }
                !idle
            });
        }
        table.retain(|_, entry| !entry.connections.is_empty());
        drop(table);
        if closed > 0 {
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        closed
    }

    /// Connections to orgs' servers open now.
    pub(crate) fn count(&self) -> usize {
        let table = self.table.lock().expect("org connections lock");
        table.values().map(|entry| entry.connections.len()).sum()
    }

    /// Closes idle connections every quarter of the idle time (1 s to 60 s) until
    /// shutdown.
    pub(crate) async fn close_idle_until_shutdown(self: Arc<Self>) {
        let every = (self.idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            self.close_idle();
        }
    }
}
