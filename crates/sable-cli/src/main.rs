//! `sable`: one binary, one subcommand per role (gateway, worker, cron) plus administration.
//!
//! The composition root: it reads settings, builds the Postgres pool, the NATS client
//! and the provider client once, binds listeners, installs signal handling, and hands
//! them to the services. Library crates never read the environment.

mod audit_admin;
mod chat;
mod cron_admin;
mod dev;
mod faults;
mod models;
mod quota_admin;
mod settings;
mod telemetry;
mod vitals;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sable_bus::{Bus, BusNames};
use sable_core::{AgentId, OrgId};
use sable_runtime::{AgentCatalog, Bindings};
use sable_store::{Store, StoreOptions};
use sable_tools::{HttpFetch, HttpFetchConfig, SkillCatalog, ToolRegistry, builtin_tools};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Sable: a distributed, multi-tenant agent runtime.
///
/// Quick start (Postgres and NATS running locally):
///   sable migrate
///   ORG=$(sable admin org create acme)
///   KEY=$(sable admin key create --org "$ORG")
///   sable worker &
///   sable gateway
///
/// Settings come from config/sable.toml, then SABLE_* environment variables
/// (SABLE_DATABASE_URL, SABLE_NATS_URL, SABLE_GATEWAY_ADDR, SABLE_NATS_PREFIX, SABLE_MODEL),
/// OPENAI_BASE_URL / OPENAI_API_KEY for the default model provider, and
/// config/providers.toml + config/models.toml for providers and model profiles.
#[derive(Debug, Parser)]
#[command(name = "sable", version, verbatim_doc_comment)]
struct Cli {
    /// Settings file (default: config/sable.toml if present).
    #[arg(long, global = true, env = "SABLE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and dispatch replies (SABLE_GATEWAY_ADDR, default 127.0.0.1:8080).
    Gateway,
    /// Pull turns from NATS and run them against the model provider.
    Worker,
    /// Fire scheduled tasks: one replica leads (a lease in Postgres) and enqueues each
    /// due occurrence once; health and metrics on SABLE_METRICS_ADDR.
    Cron,
    /// Create or update the Postgres schema, then exit.
    Migrate,
    /// Create orgs and API keys.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run every role in one process on an embedded store (./data/sable.db) and an
    /// in-process bus: no NATS or Postgres needed.
    Dev,
    /// Chat with an agent through a running gateway, streaming each reply.
    Chat(chat::ChatArgs),
    /// Keep every MCP server of config/mcp.toml (SABLE_MCP_FILE) connected and serve them
    /// to workers over gRPC (SABLE_MCP_SIDECAR_ADDR, default 127.0.0.1:50051).
    McpSidecar,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage organisations (tenants).
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage an org's scheduled tasks.
    Cron {
        #[command(subcommand)]
        command: cron_admin::CronCommand,
    },
    /// Read and verify an org's audit trail.
    Audit {
        #[command(subcommand)]
        command: audit_admin::AuditCommand,
    },
    /// Manage an org's Feishu / Lark apps (secrets from FEISHU_APP_SECRET,
    /// FEISHU_VERIFICATION_TOKEN and FEISHU_ENCRYPT_KEY, never from arguments).
    Feishu {
        #[command(subcommand)]
        command: FeishuCommand,
    },
}

#[derive(Debug, Subcommand)]
enum FeishuCommand {
    /// Add an app and print its webhook path (the console's request URL after the
    /// gateway's public origin).
    Add {
        #[arg(long = "org")]
        org_id: String,
        /// The app's id in the developer console (`cli_…`).
        #[arg(long = "app-id")]
        app_id: String,
        /// `webhook` or `long-connection`.
        #[arg(long)]
        mode: String,
        /// The open platform: https://open.feishu.cn (default) or https://open.larksuite.com.
        #[arg(long = "base-url")]
        base_url: Option<String>,
        /// The agent that answers (bindings still apply); default: the deployment's.
        #[arg(long)]
        agent: Option<String>,
        /// Group chats answer only when the bot is mentioned (default true).
        #[arg(long = "require-mention", action = clap::ArgAction::Set)]
        require_mention: Option<bool>,
        /// Replies stream into one card updated as text arrives (default true).
        #[arg(long = "stream-replies", action = clap::ArgAction::Set)]
        stream_replies: Option<bool>,
    },
    /// List an org's apps: app id, mode, base URL, agent, require mention, webhook path,
    /// stream replies.
    List {
        #[arg(long = "org")]
        org_id: String,
    },
    /// Remove an app; its events are no longer accepted.
    Remove {
        #[arg(long = "app-id")]
        app_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an org and print its id.
    Create {
        /// A human-readable name.
        name: String,
    },
    /// List every org: id, name, created (tab-separated, with a header).
    List,
    /// Set an org's quotas (`none` clears a limit) and print them as JSON.
    Quota(quota_admin::QuotaArgs),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key for an org (or, with --platform, for the deployment's
    /// administrator) and print it (shown only once).
    Create {
        /// The org's id, as printed by `sable admin org create`.
        #[arg(
            long = "org",
            required_unless_present = "platform",
            conflicts_with = "platform"
        )]
        org_id: Option<String>,
        /// viewer, member, operator (the default), admin or owner.
        #[arg(long, conflicts_with_all = ["admin", "platform"])]
        role: Option<String>,
        /// The same as --role admin: also manages the org's keys and reads
        /// deployment-wide diagnostics (`GET /v1/diagnostics/runtime`).
        #[arg(long, conflicts_with = "platform")]
        admin: bool,
        /// A platform administrator's key: manages every org (`/v1/orgs`).
        #[arg(long)]
        platform: bool,
        /// A name to tell the key apart in listings.
        #[arg(long)]
        name: Option<String>,
        /// The key stops working after this long (90d, 12h, 30m).
        #[arg(long = "expires-in")]
        expires_in: Option<String>,
    },
    /// List an org's keys: prefix, name, role, created, last used, revoked.
    List {
        #[arg(long = "org")]
        org_id: String,
    },
    /// Revoke a key by its prefix (the part after `sable_`); the next request with it
    /// is refused.
    Revoke {
        /// The key's prefix, as `sable admin key list` shows it.
        prefix: String,
    },
}

fn main() -> std::process::ExitCode {
    sable_llm::install_crypto_provider();
    let cli = Cli::parse();
    let started = Settings::load(cli.config.as_deref()).and_then(|settings| {
        start_telemetry(&cli.command, &settings).map(|guard| (settings, guard))
    });
    // The span exporter's blocking HTTP client is built and shut down outside the async
    // runtime, which it must not run inside.
    let (settings, _telemetry) = match started {
        Ok(started) => started,
        Err(error) => {
            eprintln!("error: {}", sable_core::error_chain(error.as_ref()));
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", sable_core::error_chain(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logging for every command; span export for the serving roles.
fn start_telemetry(
    command: &Command,
    settings: &Settings,
) -> anyhow::Result<sable_telemetry::TelemetryGuard> {
    let role = match command {
        Command::Gateway => Some("gateway"),
        Command::Worker => Some("worker"),
        Command::Cron => Some("cron"),
        Command::Dev => Some("dev"),
        Command::McpSidecar => Some("mcp-sidecar"),
        Command::Migrate | Command::Admin { .. } | Command::Chat(_) => None,
    };
    let tracing = match role {
        Some(role) => telemetry::tracing_config(settings, role)?,
        None => sable_telemetry::TracingConfig::default(),
    };
    sable_telemetry::init(settings.log_format, &tracing).context("cannot set up span export")
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    sable_telemetry::install_metrics();
    match cli.command {
        Command::Gateway => run_gateway(settings).await,
        Command::Worker => run_worker(settings).await,
        Command::Cron => run_cron(settings).await,
        Command::Migrate => run_migrate(&settings).await,
        Command::Admin { command } => run_admin(settings, command).await,
        Command::Dev => dev::run(settings).await,
        Command::Chat(args) => chat::run(args).await,
        Command::McpSidecar => run_mcp_sidecar(settings).await,
    }
}

async fn run_migrate(settings: &Settings) -> anyhow::Result<()> {
    let url = &settings.database_url;
    let created = Store::create_database_if_missing(url)
        .await
        .with_context(|| format!("cannot reach or create the database {}", redacted_url(url)))?;
    if created {
        eprintln!("created database {}", redacted_url(url));
    }
    let applied = connect_store(settings)?
        .migrate()
        .await
        .context("migration failed")?;
    if applied.is_empty() {
        eprintln!("database is up to date");
    } else {
        eprintln!(
            "applied {} migration(s): {}",
            applied.len(),
            applied.join(", ")
        );
    }
    Ok(())
}

/// The URL without a password, for messages.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[allow(clippy::print_stdout)]
async fn run_admin(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    let store = connect_store(&settings)?;
    match command {
        AdminCommand::Org { command } => run_org_admin(&store, command).await,
        AdminCommand::Key { command } => run_key_admin(&store, command).await,
        AdminCommand::Cron { command } => cron_admin::run(settings, command).await,
        AdminCommand::Feishu { command } => run_feishu_admin(&settings, &store, command).await,
        AdminCommand::Audit { command } => audit_admin::run(&store, command).await,
    }
}

#[allow(clippy::print_stdout)]
async fn run_org_admin(store: &Store, command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::Create { name } => {
            anyhow::ensure!(!name.trim().is_empty(), "the org name must not be empty");
            let org_id = store
                .create_org_as(name.trim(), &sable_store::Actor::admin_cli())
                .await
                .context("could not create the org")?;
            println!("{org_id}");
        }
        OrgCommand::List => {
            let orgs = store.list_orgs().await.context("could not list the orgs")?;
            println!("id\tname\tcreated");
            for org in orgs {
                println!("{}\t{}\t{}", org.id, org.name, org.created_at.to_rfc3339());
            }
        }
        OrgCommand::Quota(args) => quota_admin::run(store, args).await?,
    }
    Ok(())
}

/// The org and role `sable admin key create` was asked for.
fn key_org_and_role(
    org_id: Option<String>,
    role: Option<&str>,
    admin: bool,
    platform: bool,
) -> anyhow::Result<(OrgId, sable_core::Role)> {
    use sable_core::Role;
    if platform {
        return Ok((sable_store::platform_org(), Role::Platform));
    }
    let org_id: OrgId = org_id.context("--org is required")?.parse()?;
    let role = match (role, admin) {
        (_, true) => Role::Admin,
        (None, false) => sable_gateway::DEFAULT_KEY_ROLE,
        (Some(text), false) => text
            .parse()
            .ok()
            .filter(|role| Role::ORG_ROLES.contains(role))
            .with_context(|| {
                format!(
                    "--role {text}: expected viewer, member, operator, admin or owner (--platform for a platform key)"
                )
            })?,
    };
    Ok((org_id, role))
}

/// When a key given `--expires-in` stops working.
fn expiry(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let lifetime = humantime::parse_duration(text).with_context(|| {
        format!("--expires-in {text}: write a duration such as 90d, 12h or 30m")
    })?;
    anyhow::ensure!(
        !lifetime.is_zero(),
        "--expires-in {text}: must be longer than zero"
    );
    chrono::TimeDelta::from_std(lifetime)
        .ok()
        .and_then(|lifetime| chrono::Utc::now().checked_add_signed(lifetime))
        .with_context(|| format!("--expires-in {text}: too long"))
}

#[allow(clippy::print_stdout)]
async fn run_key_admin(store: &Store, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            org_id,
            role,
            admin,
            platform,
            name,
            expires_in,
        } => {
            let (org_id, role) = key_org_and_role(org_id, role.as_deref(), admin, platform)?;
            let expires_at = expires_in.as_deref().map(expiry).transpose()?;
            let new = sable_store::NewApiKey::new(org_id, role)
                .named(name.as_deref())
                .expiring(expires_at);
            let key = store
                .create_api_key(&new, &sable_store::Actor::admin_cli())
                .await
                .with_context(|| format!("could not create a key for org {org_id}"))?;
            println!("{}", key.key);
        }
        KeyCommand::List { org_id } => {
            let org_id: OrgId = org_id.parse()?;
            anyhow::ensure!(store.org_exists(org_id).await?, "no org {org_id}");
            let keys = store
                .api_keys(org_id)
                .await
                .context("could not list the keys")?;
            println!("prefix\tname\trole\tcreated\tlast_used\trevoked");
            let time = |time: Option<chrono::DateTime<chrono::Utc>>| {
                time.map_or_else(|| "-".to_owned(), |time| time.to_rfc3339())
            };
            for key in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.prefix,
                    key.name.as_deref().unwrap_or("-"),
                    key.role,
                    key.created_at.to_rfc3339(),
                    time(key.last_used_at),
                    time(key.revoked_at)
                );
            }
        }
        KeyCommand::Revoke { prefix } => {
            let prefix = prefix.trim_start_matches("sable_");
            let revoked = store
                .revoke_api_key(None, prefix, &sable_store::Actor::admin_cli())
                .await
                .context("could not revoke the key")?
                .with_context(|| format!("no key with prefix {prefix}"))?;
            eprintln!("revoked key {} of org {}", revoked.prefix, revoked.org_id);
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_feishu_admin(
    settings: &Settings,
    store: &Store,
    command: FeishuCommand,
) -> anyhow::Result<()> {
    match command {
        FeishuCommand::Add {
            org_id,
            app_id,
            mode,
            base_url,
            agent,
            require_mention,
            stream_replies,
        } => {
            let org_id: OrgId = org_id.parse()?;
            anyhow::ensure!(store.org_exists(org_id).await?, "no org {org_id}");
            let key = match secrets_key(settings)? {
                Some(key) => key,
                None => dev::existing_secrets_key(&settings.database_url)?.context(
                    "SABLE_SECRETS_KEY is not set: it seals the app's secrets (base64 of 32 bytes)",
                )?,
            };
            let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
            let secrets = sable_store::FeishuSecrets {
                app_secret: variable("FEISHU_APP_SECRET")
                    .context("FEISHU_APP_SECRET is not set")?,
                verification_token: variable("FEISHU_VERIFICATION_TOKEN")
                    .context("FEISHU_VERIFICATION_TOKEN is not set")?,
                encrypt_key: variable("FEISHU_ENCRYPT_KEY"),
            };
            let agents = load_agents(settings)?;
            let input = sable_gateway::FeishuAppInput {
                org_id,
                app_id,
                mode,
                base_url,
                agent,
                require_mention,
                stream_replies,
                secrets,
            };
            let app = sable_gateway::build_feishu_app(input, &key, &agents)
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                store
                    .create_feishu_app(&app, &sable_store::Actor::admin_cli())
                    .await?,
                "a feishu app with app id {} exists already",
                app.app_id
            );
            println!("{}", sable_gateway::feishu_webhook_path(&app.app_id));
        }
        FeishuCommand::List { org_id } => {
            let org_id: OrgId = org_id.parse()?;
            anyhow::ensure!(store.org_exists(org_id).await?, "no org {org_id}");
            println!(
                "app_id\tmode\tbase_url\tagent\trequire_mention\twebhook_path\tstream_replies"
            );
            for app in store.feishu_apps(org_id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    app.app_id,
                    app.mode,
                    app.base_url,
                    app.agent.as_deref().unwrap_or("-"),
                    app.require_mention,
                    sable_gateway::feishu_webhook_path(&app.app_id),
                    app.stream_replies
                );
            }
        }
        FeishuCommand::Remove { app_id } => {
            let removed = store
                .remove_feishu_app(None, &app_id, &sable_store::Actor::admin_cli())
                .await?
                .with_context(|| format!("no feishu app {app_id}"))?;
            eprintln!(
                "removed feishu app {} of org {}",
                removed.app_id, removed.org_id
            );
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_gateway(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let store = connect_store(&settings)?;
    let bus = connect_bus(&settings, "sable-gateway").await?;
    let agents = load_agents(&settings)?;
    let listener = tokio::net::TcpListener::bind(&settings.gateway_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.gateway_addr))?;
    // Tests and scripts read this line to find a port chosen by the OS (address :0).
    println!(
        "sable gateway listening on http://{}",
        listener.local_addr()?
    );
    let config = gateway_config(&settings, &agents, models::ModelSource::Configured)?;
    let vitals = spawn_vitals(
        &settings,
        &store,
        &bus,
        "gateway",
        instance_id("gateway"),
        &shutdown,
    );
    let result = sable_gateway::run(config, store, bus, listener, shutdown).await;
    vitals.abort();
    result
}

#[allow(clippy::print_stdout)]
async fn run_worker(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let store = connect_store(&settings)?;
    let bus = connect_bus(&settings, "sable-worker").await?;
    let agents = load_agents(&settings)?;
    let models = build_models(&settings, &agents, models::ModelSource::Configured)?;
    let orgs = worker_org_configs(&settings, &agents, &store, models::ModelSource::Configured)?;
    let capabilities = load_capabilities(&settings, &agents)?;
    let config = worker_config(&settings);
    let metrics_listener = tokio::net::TcpListener::bind(&settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {} (set SABLE_METRICS_ADDR)",
                settings.metrics_addr
            )
        })?;
    println!(
        "sable worker metrics on http://{}/metrics",
        metrics_listener.local_addr()?
    );
    println!("sable worker {} starting", config.worker_id);
    let metrics = tokio::spawn(serve_worker_http(
        metrics_listener,
        store.clone(),
        bus.clone(),
        shutdown.clone(),
    ));
    let vitals = spawn_vitals(
        &settings,
        &store,
        &bus,
        "worker",
        config.worker_id.clone(),
        &shutdown,
    );
    let result = sable_worker::run(config, store, bus, models, orgs, capabilities, shutdown).await;
    metrics.abort();
    vitals.abort();
    result
}

#[allow(clippy::print_stdout)]
async fn run_cron(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let store = connect_store(&settings)?;
    let bus = connect_bus(&settings, "sable-cron").await?;
    let agents = load_agents(&settings)?;
    let intake = turn_intake(
        &settings,
        &agents,
        &store,
        &bus,
        models::ModelSource::Configured,
    )?;
    let config = cron_config(&settings);
    let listener = tokio::net::TcpListener::bind(&settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {} (set SABLE_METRICS_ADDR)",
                settings.metrics_addr
            )
        })?;
    println!(
        "sable cron metrics on http://{}/metrics",
        listener.local_addr()?
    );
    println!("sable cron {} starting", config.instance_id);
    let vitals = spawn_vitals(
        &settings,
        &store,
        &bus,
        "cron",
        config.instance_id.clone(),
        &shutdown,
    );
    let result = sable_cron::run(config, store, intake, Some(listener), shutdown).await;
    vitals.abort();
    result
}

pub(crate) fn cron_config(settings: &Settings) -> sable_cron::CronConfig {
    sable_cron::CronConfig {
        instance_id: instance_id("cron"),
        lease_ttl: Settings::millis(settings.cron_lease_ttl_ms),
        tick_interval: Settings::millis(settings.cron_tick_interval_ms),
        misfire_grace: Settings::millis(settings.cron_misfire_grace_ms),
        run_retention: settings.cron_run_retention,
        ..sable_cron::CronConfig::default()
    }
}

/// The intake every producer of turns shares: each org's agents, bindings and default
/// agent over the deployment's.
pub(crate) fn turn_intake(
    settings: &Settings,
    agents: &AgentCatalog,
    store: &Store,
    bus: &Bus,
    source: models::ModelSource,
) -> anyhow::Result<sable_runtime::TurnIntake> {
    let base = org_config_base(settings, agents, source, false)?;
    let orgs = sable_runtime::OrgConfigs::new(
        store.clone(),
        base,
        secrets_key(settings)?,
        false,
        Settings::millis(settings.org_config_refresh_ms),
    );
    Ok(sable_runtime::TurnIntake::new(
        store.clone(),
        bus.clone(),
        orgs,
    ))
}

/// What the deployment's files give every org: agents, bindings, the default agent, the
/// model catalog and (`with_keys`: the worker, which calls providers) the providers' keys.
pub(crate) fn org_config_base(
    settings: &Settings,
    agents: &AgentCatalog,
    source: models::ModelSource,
    with_keys: bool,
) -> anyhow::Result<sable_runtime::OrgConfigBase> {
    let catalog = models::model_catalog(settings, source)?;
    let keys = if with_keys {
        models::read_keys(&catalog)?
    } else {
        Default::default()
    };
    Ok(sable_runtime::OrgConfigBase {
        agents: agents.clone(),
        routing: sable_runtime::IntakeRouting {
            default_agent: AgentId::parse(settings.default_agent.clone())?,
            agents: agents.ids().map(str::to_owned).collect(),
            bindings: load_bindings(settings, agents)?,
        },
        models: catalog,
        keys,
        mcp_servers: shared_mcp_servers(settings)?,
    })
}

/// The MCP sidecar's shared servers as the other roles know them (names and transports
/// from `config/mcp.toml`, without the sidecar's `${VAR}` secrets).
fn shared_mcp_servers(settings: &Settings) -> anyhow::Result<Vec<sable_runtime::SharedMcpServer>> {
    Ok(sable_mcp_sidecar::McpConfig::summaries(&settings.mcp_file)?
        .into_iter()
        .map(|server| sable_runtime::SharedMcpServer {
            name: server.name,
            transport: server.transport,
            enabled: server.enabled,
        })
        .collect())
}

/// The worker's per-org configurations: it builds each org's own model client.
pub(crate) fn worker_org_configs(
    settings: &Settings,
    agents: &AgentCatalog,
    store: &Store,
    source: models::ModelSource,
) -> anyhow::Result<sable_runtime::OrgConfigs> {
    Ok(sable_runtime::OrgConfigs::new(
        store.clone(),
        org_config_base(settings, agents, source, true)?,
        secrets_key(settings)?,
        true,
        Settings::millis(settings.org_config_refresh_ms),
    ))
}

/// Serves a worker's `/metrics`, `/healthz` (the process is up) and `/readyz` (Postgres
/// answers and NATS is connected, as the gateway's `/readyz` checks): its probes.
async fn serve_worker_http(
    listener: tokio::net::TcpListener,
    store: Store,
    bus: Bus,
    shutdown: CancellationToken,
) {
    let readyz = move || {
        let (store, bus) = (store.clone(), bus.clone());
        async move {
            let store_ok = matches!(
                tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await,
                Ok(Ok(()))
            );
            match (store_ok, bus.is_connected()) {
                (true, true) => (axum::http::StatusCode::OK, "ready"),
                (false, _) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unreachable",
                ),
                (true, false) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "NATS is not connected",
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { sable_telemetry::render_metrics() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "metrics endpoint stopped");
    }
}

pub(crate) fn gateway_config(
    settings: &Settings,
    agents: &AgentCatalog,
    source: models::ModelSource,
) -> anyhow::Result<sable_gateway::GatewayConfig> {
    Ok(sable_gateway::GatewayConfig {
        org_base: org_config_base(settings, agents, source, false)?,
        org_config_refresh: Settings::millis(settings.org_config_refresh_ms),
        wait_timeout: Settings::millis(settings.wait_timeout_ms),
        wait_poll_interval: Settings::millis(settings.wait_poll_interval_ms),
        sweep_interval: Settings::millis(settings.sweep_interval_ms),
        sweep_after: Settings::millis(settings.sweep_after_ms),
        webhook: webhook_channel(settings)?,
        feishu: sable_gateway::FeishuConfig {
            secrets_key: secrets_key(settings)?,
            client: reqwest::Client::builder()
                .timeout(Settings::millis(settings.feishu_timeout_ms))
                .build()
                .context("cannot build the Feishu HTTP client")?,
            rate_limit_backoff: Settings::millis(settings.feishu_rate_limit_backoff_ms),
            max_rate_limit_retries: 3,
            apps_refresh: Settings::millis(settings.feishu_apps_refresh_ms),
            stream_interval: Settings::millis(settings.feishu_stream_interval_ms),
        },
        faults: faults::from_settings(settings),
        langfuse_host: settings
            .langfuse_host
            .clone()
            .filter(|host| !host.is_empty()),
        langfuse_project_id: settings.langfuse_project_id.clone(),
        live_within: Settings::millis(settings.heartbeat_interval_ms) * vitals::BEATS_BEFORE_GONE,
        http: sable_gateway::HttpLimits {
            header_timeout: Settings::millis(settings.http_header_timeout_ms),
            body_timeout: Settings::millis(settings.http_body_timeout_ms),
            max_connections: settings.http_max_connections,
            shutdown_grace: Settings::millis(settings.shutdown_grace_ms),
        },
        tools: load_capabilities(settings, agents)?.tools,
        audit: settings.audit_config()?,
        admin_key: settings
            .admin_key
            .clone()
            .filter(|key| !key.expose().trim().is_empty()),
        quota_cache: Settings::millis(settings.quota_cache_ms),
    })
}

/// The envelope key of channel secrets, when `SABLE_SECRETS_KEY` (or, for `sable dev`,
/// the data folder's key file) provides one.
pub(crate) fn secrets_key(settings: &Settings) -> anyhow::Result<Option<sable_store::SecretsKey>> {
    settings
        .secrets_key
        .as_ref()
        .map(|key| {
            sable_store::SecretsKey::from_base64(key.expose()).context("invalid SABLE_SECRETS_KEY")
        })
        .transpose()
}

/// The `webhook` channel when `webhook_url` is set, with its own pooled HTTP client.
fn webhook_channel(settings: &Settings) -> anyhow::Result<Option<sable_gateway::WebhookChannel>> {
    let Some(url) = settings.webhook_url.clone() else {
        return Ok(None);
    };
    let client = reqwest::Client::builder()
        .timeout(Settings::millis(settings.webhook_timeout_ms))
        .build()
        .context("cannot build the webhook HTTP client")?;
    Ok(Some(sable_gateway::WebhookChannel { url, client }))
}

/// The heartbeat and backlog gauges of a serving process.
pub(crate) fn spawn_vitals(
    settings: &Settings,
    store: &Store,
    bus: &Bus,
    role: &str,
    instance_id: String,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    vitals::spawn(
        store.clone(),
        bus.clone(),
        role,
        instance_id,
        Settings::millis(settings.heartbeat_interval_ms),
        shutdown.clone(),
    )
}

pub(crate) fn worker_config(settings: &Settings) -> sable_worker::WorkerConfig {
    sable_worker::WorkerConfig {
        worker_id: settings
            .worker_id
            .clone()
            .unwrap_or_else(|| instance_id("worker")),
        lease_ttl: Settings::millis(settings.lease_ttl_ms),
        max_concurrent_sessions: settings.worker_concurrency,
        sweep_interval: Settings::millis(settings.sweep_interval_ms),
        sweep_after: Settings::millis(settings.sweep_after_ms),
        shutdown_grace: Settings::millis(settings.shutdown_grace_ms),
        approval_ttl: Settings::millis(settings.approval_ttl_ms),
        max_turn_attempts: settings.max_turn_attempts,
        faults: faults::from_settings(settings),
        content_capture: settings
            .content_capture()
            .expect("the patterns were checked when the settings loaded"),
        metrics_org_labels: settings.metrics_org_labels,
    }
}

/// The tool registry (builtin tools) and the skills catalog, after checking that every
/// agent names only tools and skills that exist.
pub(crate) fn load_capabilities(
    settings: &Settings,
    agents: &AgentCatalog,
) -> anyhow::Result<sable_worker::Capabilities> {
    let skills =
        Arc::new(SkillCatalog::load(&settings.skills_dir).with_context(|| {
            format!("cannot load skills from {}", settings.skills_dir.display())
        })?);
    let mut tools = ToolRegistry::default();
    let http_fetch = HttpFetch::new(HttpFetchConfig {
        allow: settings.http_fetch_allow.clone(),
        ..HttpFetchConfig::default()
    })
    .context("invalid http_fetch_allow")?;
    for tool in builtin_tools(skills.clone())
        .into_iter()
        .chain([Arc::new(http_fetch) as Arc<dyn sable_tools::Tool>])
    {
        tools.register(tool).map_err(anyhow::Error::msg)?;
    }
    // MCP tools are known only at turn time (servers come and go); any `mcp__` name
    // passes here and is offered while its server is connected.
    agents
        .check_capabilities(
            |tool| tools.descriptor(tool).is_some() || tool.starts_with("mcp__"),
            |skill| skills.contains(skill),
        )
        .context("an agent names a tool or skill that does not exist")?;
    if let Some(url) = settings
        .mcp_sidecar_url
        .as_deref()
        .filter(|url| !url.is_empty())
    {
        tools.set_mcp(sable_tools::McpCatalog::connect_lazy(url)?);
    }
    Ok(sable_worker::Capabilities { tools, skills })
}

/// The binding rules, after checking that each names an agent that exists.
pub(crate) fn load_bindings(
    settings: &Settings,
    agents: &AgentCatalog,
) -> anyhow::Result<Bindings> {
    let path = &settings.bindings_file;
    let bindings = Bindings::load(path).context("cannot load the bindings")?;
    bindings.check_agents(path, |agent| agents.contains(agent))?;
    Ok(bindings)
}

/// The model client, after checking every agent names a profile it knows.
pub(crate) fn build_models(
    settings: &Settings,
    agents: &AgentCatalog,
    source: models::ModelSource,
) -> anyhow::Result<sable_llm::ModelClient> {
    let models = models::build_model_client(settings, source)?;
    agents
        .check_profiles(|profile| models.profile(profile).is_some())
        .context("an agent names a model profile that config/models.toml does not define")?;
    Ok(models)
}

pub(crate) fn connect_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: settings.db_max_connections,
        acquire_timeout: Settings::millis(settings.db_acquire_timeout_ms),
        audit: settings.audit_enabled,
    };
    Store::connect_lazy(&settings.database_url, &options).context("invalid SABLE_DATABASE_URL")
}

pub(crate) async fn connect_bus(settings: &Settings, connection_name: &str) -> anyhow::Result<Bus> {
    let names = BusNames::new(&settings.nats_prefix).context("invalid SABLE_NATS_PREFIX")?;
    Ok(Bus::connect_nats(&settings.nats_url, names, connection_name).await?)
}

pub(crate) fn load_agents(settings: &Settings) -> anyhow::Result<AgentCatalog> {
    let agents = AgentCatalog::load(&settings.agents_dir).with_context(|| {
        format!(
            "cannot load agents from {} (the agents_dir setting, SABLE_AGENTS_DIR; a relative \
             path is read from the directory sable runs in, {})",
            settings.agents_dir.display(),
            std::env::current_dir()
                .map_or_else(|_| "unknown".into(), |dir| dir.display().to_string())
        )
    })?;
    anyhow::ensure!(
        agents.contains(&settings.default_agent),
        "the default agent '{}' is not in {}",
        settings.default_agent,
        settings.agents_dir.display()
    );
    Ok(agents)
}

/// Unique per process: `<host>-<pid>-<random>`, the host defaulting to the role.
pub(crate) fn instance_id(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| role.into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

#[allow(clippy::print_stdout)]
async fn run_mcp_sidecar(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let config = sable_mcp_sidecar::SidecarConfig::new(load_mcp(&settings)?);
    let grpc = tokio::net::TcpListener::bind(&settings.mcp_sidecar_addr)
        .await
        .with_context(|| {
            format!(
                "cannot serve gRPC on {} (set SABLE_MCP_SIDECAR_ADDR)",
                settings.mcp_sidecar_addr
            )
        })?;
    let http = tokio::net::TcpListener::bind(&settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {} (set SABLE_METRICS_ADDR)",
                settings.metrics_addr
            )
        })?;
    // Tests and scripts read these lines to find ports chosen by the OS (address :0).
    println!(
        "sable mcp-sidecar listening on grpc://{}",
        grpc.local_addr()?
    );
    println!(
        "sable mcp-sidecar metrics on http://{}/metrics",
        http.local_addr()?
    );
    let listeners = sable_mcp_sidecar::SidecarListeners {
        grpc,
        http: Some(http),
    };
    sable_mcp_sidecar::run(config, listeners, shutdown).await
}

/// `config/mcp.toml` (or `SABLE_MCP_FILE`), `${VAR}` taken from this process's
/// environment. A missing default file means no servers.
pub(crate) fn load_mcp(settings: &Settings) -> anyhow::Result<sable_mcp_sidecar::McpConfig> {
    let lookup = |name: &str| std::env::var(name).ok();
    Ok(sable_mcp_sidecar::McpConfig::load(
        &settings.mcp_file,
        &lookup,
    )?)
}
