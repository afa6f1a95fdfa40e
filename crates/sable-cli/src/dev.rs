//! `sable dev`: every role in one process, on an embedded SQLite store and an in-process
//! bus, so a newcomer with only `cargo` can chat with an agent. The same services run as
//! in the distributed deployment; only the store and bus backends differ.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use sable_bus::Bus;
use sable_core::OrgId;
use sable_store::{Store, StoreOptions, is_sqlite_url};

use crate::models::{ModelSource, PROVIDER_VARIABLES};
use crate::settings::Settings;

/// Where the embedded store lives unless `SABLE_DATABASE_URL` says otherwise.
const DEFAULT_DEV_DATABASE_URL: &str = "sqlite://data/sable.db";

/// Runs the gateway, a worker and a cron replica in this process until SIGTERM or Ctrl-C.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = model_source();
    settings.database_url =
        std::env::var("SABLE_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DEV_DATABASE_URL.to_owned());
    let store = open_store(&settings).await?;
    if settings.secrets_key.is_none() {
        settings.secrets_key = Some(dev_secrets_key(&settings.database_url)?);
    }
    let bus = Bus::local();
    let shutdown = crate::shutdown_on_signal();
    let sidecar = start_sidecar(&mut settings, &shutdown).await?;
    let agents = crate::load_agents(&settings)?;
    let models = crate::build_models(&settings, &agents, source)?;
    let capabilities = crate::load_capabilities(&settings, &agents)?;
    let listener = tokio::net::TcpListener::bind(&settings.gateway_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.gateway_addr))?;
    let addr = listener.local_addr()?;
    let gateway_config = crate::gateway_config(&settings, &agents, source)?;
    let worker_config = crate::worker_config(&settings);
    let vitals = crate::spawn_vitals(
        &settings,
        &store,
        &bus,
        "dev",
        crate::instance_id("dev"),
        &shutdown,
    );
    let gateway = sable_gateway::run(
        gateway_config,
        store.clone(),
        bus.clone(),
        listener,
        shutdown.clone(),
    );
    let intake = crate::turn_intake(&settings, &agents, &store, &bus, source)?;
    let cron = sable_cron::run(
        crate::cron_config(&settings),
        store.clone(),
        intake,
        None,
        shutdown.clone(),
    );
    let worker = sable_worker::run(
        worker_config,
        store.clone(),
        bus,
        models,
        crate::worker_org_configs(&settings, &agents, &store, source)?,
        capabilities,
        shutdown.clone(),
    );
    let welcome = welcome(&store, &settings.database_url).await?;
    if source == ModelSource::Echo {
        announce_echo_model();
    }
    announce(addr, started, &settings.database_url, &welcome);
    let finished = tokio::try_join!(gateway, worker, cron);
    vitals.abort();
    if let Some(sidecar) = sidecar {
        sidecar.await??;
    }
    finished?;
    Ok(())
}

/// Runs the MCP sidecar in this process, from the same `config/mcp.toml`, on a loopback
/// port of its own, and points the worker and gateway at it (even when the file names no
/// server: orgs may add their own). Not started when `SABLE_MCP_SIDECAR_URL` points at a
/// sidecar running elsewhere.
async fn start_sidecar(
    settings: &mut Settings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mcp = crate::load_mcp(settings)?;
    if settings.mcp_sidecar_url.is_some() {
        return Ok(None);
    }
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the in-process MCP sidecar")?;
    settings.mcp_sidecar_url = Some(format!("http://{}", grpc.local_addr()?));
    let listeners = sable_mcp_sidecar::SidecarListeners { grpc, http: None };
    Ok(Some(tokio::spawn(sable_mcp_sidecar::run(
        sable_mcp_sidecar::SidecarConfig::new(mcp),
        listeners,
        shutdown.clone(),
    ))))
}

/// The configured provider, or the echo model when none is configured.
fn model_source() -> ModelSource {
    let configured = PROVIDER_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    if configured {
        ModelSource::Configured
    } else {
        ModelSource::Echo
    }
}

/// Says loudly that replies are echoes, and how to connect a real model.
#[allow(clippy::print_stdout)]
fn announce_echo_model() {
    println!("{ECHO_BANNER}");
}

const ECHO_BANNER: &str = "\
*** No model provider is configured: every agent answers with the built-in echo model
*** (each reply repeats your message; turn records show model \"echo\"). To use a real one, set:
***   OPENAI_API_KEY   the provider's API key
***   OPENAI_BASE_URL  its URL up to /v1, for any OpenAI-compatible endpoint (default https://api.openai.com/v1)
***   SABLE_MODEL      the model, e.g. gpt-4o-mini
***   or ANTHROPIC_API_KEY for the `claude` profile of config/models.toml";

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = &settings.database_url;
    Store::create_database_if_missing(url)
        .await
        .with_context(|| format!("cannot open or create the database {url}"))?;
    let options = StoreOptions {
        max_connections: settings.db_max_connections,
        acquire_timeout: Settings::millis(settings.db_acquire_timeout_ms),
        audit: settings.audit_enabled,
    };
    let store = Store::connect_lazy(url, &options).context("invalid SABLE_DATABASE_URL")?;
    store.migrate().await.context("migration failed")?;
    Ok(store)
}

fn sqlite_directory(url: &str) -> Option<PathBuf> {
    if !is_sqlite_url(url) {
        return None;
    }
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    Path::new(path)
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// The file beside the embedded store holding its secrets key.
fn secrets_key_file(database_url: &str) -> PathBuf {
    sqlite_directory(database_url)
        .unwrap_or_else(|| PathBuf::from("data"))
        .join("secrets.key")
}

/// The embedded store's secrets key, created (owner-only) on first start.
fn dev_secrets_key(database_url: &str) -> anyhow::Result<sable_core::Secret> {
    if let Some(existing) = existing_secrets_key_text(database_url)? {
        return Ok(existing);
    }
    let path = secrets_key_file(database_url);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let key = sable_store::SecretsKey::generate_base64();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{key}")?;
    Ok(sable_core::Secret::new(key))
}

fn existing_secrets_key_text(database_url: &str) -> anyhow::Result<Option<sable_core::Secret>> {
    if !is_sqlite_url(database_url) {
        return Ok(None);
    }
    match std::fs::read_to_string(secrets_key_file(database_url)) {
        Ok(text) => Ok(Some(sable_core::Secret::new(text.trim()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The key `sable dev` created beside an embedded store, for admin commands on it.
pub(crate) fn existing_secrets_key(
    database_url: &str,
) -> anyhow::Result<Option<sable_store::SecretsKey>> {
    existing_secrets_key_text(database_url)?
        .map(|key| {
            sable_store::SecretsKey::from_base64(key.expose())
                .context("the embedded store's secrets.key is invalid")
        })
        .transpose()
}

/// What to tell the user about their key.
enum Welcome {
    /// First start: a new org and key; the key is shown this once.
    NewKey {
        org_id: OrgId,
        key: String,
    },
    Returning {
        org_id: OrgId,
    },
}

/// Creates the default org and key on first start. The org's id is remembered in a file
/// beside the store (the key itself is only ever stored hashed).
async fn welcome(store: &Store, database_url: &str) -> anyhow::Result<Welcome> {
    let marker = sqlite_directory(database_url)
        .unwrap_or_else(|| PathBuf::from("data"))
        .join("dev-org");
    let remembered = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|text| text.trim().parse::<OrgId>().ok());
    if let Some(org_id) = remembered
        && store.org_exists(org_id).await?
    {
        return Ok(Welcome::Returning { org_id });
    }
    let org_id = store.create_org("default").await?;
    let key = store
        .create_api_key(
            &sable_store::NewApiKey::new(org_id, sable_core::Role::Owner).named(Some("sable dev")),
            &sable_store::Actor::admin_cli(),
        )
        .await?;
    if let Some(parent) = marker.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&marker, org_id.to_string())
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(Welcome::NewKey {
        org_id,
        key: key.key,
    })
}

#[allow(clippy::print_stdout)]
fn announce(addr: std::net::SocketAddr, started: Instant, database_url: &str, welcome: &Welcome) {
    println!("sable gateway listening on http://{addr}");
    println!(
        "sable dev ready in {} ms (store {database_url}, in-process bus)",
        started.elapsed().as_millis()
    );
    match welcome {
        Welcome::NewKey { org_id, key } => {
            println!("Created org {org_id} and its API key (shown only this once):");
            println!("API key: {key}");
            println!();
            println!(
                "  curl -s http://{addr}/v1/messages -H 'Authorization: Bearer {key}' \\\n       -H 'content-type: application/json' -d '{{\"text\":\"hello\",\"wait\":true}}'"
            );
            println!();
            println!("  or chat in the terminal:  SABLE_API_KEY={key} cargo run --release -- chat");
        }
        Welcome::Returning { org_id } => {
            println!(
                "Org {org_id}: use the API key printed at first start (or: sable admin key create --org {org_id} with SABLE_DATABASE_URL={database_url})."
            );
            println!(
                "  curl -s http://{addr}/v1/messages -H \"Authorization: Bearer $SABLE_API_KEY\" \\\n       -H 'content-type: application/json' -d '{{\"text\":\"hello\",\"wait\":true}}'"
            );
        }
    }
}
