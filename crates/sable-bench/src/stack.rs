//! Starting the deployment under test.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sable_testkit::{
    ChildProcess, CommitCounter, FakeProvider, NatsServer, PostgresCluster, RoundTripCounter,
    TestDatabase, workspace_root,
};

use crate::meter::{Members, Meter, ProcessGroup};
use crate::{Args, Mode, Switch};

const READY: Duration = Duration::from_secs(60);

/// A running deployment and what keeps it alive.
pub struct Stack {
    pub url: String,
    pub key: String,
    /// `--orgs`: each org's key (its agent is `tenant`).
    pub tenants: Vec<String>,
    pub roles: Vec<ChildProcess>,
    /// Probes for the measured window; in the distributed mode its round-trip counter sits
    /// between the roles and Postgres, so it lives as long as they do.
    pub meter: Meter,
    _provider: FakeProvider,
    _nats: Option<NatsServer>,
    _database: Option<TestDatabase>,
    /// A private cluster holding `_database` when no Postgres was reachable (declared
    /// after it so the database is dropped first).
    _postgres: Option<PostgresCluster>,
    _data_dir: Option<tempdir::TempDir>,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub async fn start(args: &Args) -> anyhow::Result<Stack> {
    let provider = FakeProvider::start().await?;
    provider.set_latency(Duration::from_millis(args.provider_latency_ms));
    let sable = sable_binary(args)?;
    match args.mode {
        Mode::Embedded => start_embedded(&sable, provider).await,
        Mode::Distributed => start_distributed(&sable, provider, args).await,
        Mode::Mcp => anyhow::bail!("--mode mcp starts no deployment"),
    }
}

fn sable_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.sable_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("sable"),
    };
    anyhow::ensure!(
        path.is_file(),
        "no sable binary at {} (build it: cargo build --release -p sable-cli)",
        path.display()
    );
    Ok(path)
}

fn base_env(provider: &FakeProvider) -> Vec<(String, String)> {
    [
        ("SABLE_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("SABLE_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        (
            "SABLE_AGENTS_DIR",
            workspace_root().join("agents").display().to_string(),
        ),
        ("OPENAI_BASE_URL", provider.base_url.clone()),
        ("OPENAI_API_KEY", "bench".to_owned()),
        ("SABLE_MODEL", "bench-model".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

async fn start_embedded(sable: &std::path::Path, provider: FakeProvider) -> anyhow::Result<Stack> {
    let data_dir =
        std::env::temp_dir().join(format!("sable-bench-{}", uuid::Uuid::new_v4().simple()));
    let mut env = base_env(&provider);
    env.push((
        "SABLE_DATABASE_URL".into(),
        format!("sqlite://{}/sable.db", data_dir.display()),
    ));
    let mut dev = ChildProcess::spawn("dev", sable, &["dev"], &env, &workspace_root())?;
    let url = dev
        .wait_for_line("sable gateway listening on", READY)
        .await?;
    let key = dev.wait_for_line("API key:", READY).await?;
    let meter = Meter {
        round_trips: None,
        commits: None,
        processes: vec![ProcessGroup::of("sable_dev", [dev.pid()]), load_generator()],
    };
    Ok(Stack {
        url,
        key,
        tenants: Vec::new(),
        roles: vec![dev],
        meter,
        _provider: provider,
        _nats: None,
        _database: None,
        _postgres: None,
        _data_dir: Some(tempdir::TempDir(data_dir)),
    })
}

async fn start_distributed(
    sable: &std::path::Path,
    provider: FakeProvider,
    args: &Args,
) -> anyhow::Result<Stack> {
    let (nats, nats_url) = match std::env::var("SABLE_NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = NatsServer::start()
                .await
                .context("no SABLE_NATS_URL and nats-server could not be started")?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let (database, postgres, database_url) = match std::env::var("SABLE_DATABASE_URL") {
        Ok(url) => (None, None, url),
        Err(_) => {
            let (database, postgres) = fresh_database().await?;
            let url = database.url.clone();
            (Some(database), postgres, url)
        }
    };
    let round_trips = if args.direct_database {
        None
    } else {
        Some(RoundTripCounter::in_front_of(&database_url).await.with_context(|| {
            format!("cannot put the round-trip counter in front of {database_url} (--direct-database skips it)")
        })?)
    };
    let roles_database_url = round_trips.as_ref().map_or_else(
        || database_url.clone(),
        |counter| counter.proxied_url(&database_url),
    );
    let commits = commit_counter(&database_url).await?;
    let mut env = base_env(&provider);
    env.extend([
        ("SABLE_NATS_URL".to_owned(), nats_url),
        ("SABLE_DATABASE_URL".to_owned(), roles_database_url),
        (
            "SABLE_NATS_PREFIX".to_owned(),
            format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        ),
        (
            "SABLE_DB_MAX_CONNECTIONS".to_owned(),
            args.db_max_connections.to_string(),
        ),
        (
            "SABLE_AUDIT_ENABLED".to_owned(),
            (args.audit == Switch::On).to_string(),
        ),
    ]);
    sable_testkit::run_to_completion(sable, &["migrate"], &env).await?;
    let org =
        sable_testkit::run_to_completion(sable, &["admin", "org", "create", "bench"], &env).await?;
    let key =
        sable_testkit::run_to_completion(sable, &["admin", "key", "create", "--org", &org], &env)
            .await?;
    let mut roles = Vec::new();
    for index in 0..args.workers {
        let mut worker = ChildProcess::spawn(
            &format!("worker{index}"),
            sable,
            &["worker"],
            &env,
            &workspace_root(),
        )?;
        worker.wait_for_line("sable worker", READY).await?;
        roles.push(worker);
    }
    let mut gateway = ChildProcess::spawn("gateway", sable, &["gateway"], &env, &workspace_root())?;
    let url = gateway
        .wait_for_line("sable gateway listening on", READY)
        .await?;
    let meter = Meter {
        round_trips,
        commits: Some(commits),
        processes: vec![
            ProcessGroup::of("gateway", [gateway.pid()]),
            ProcessGroup::of("worker", roles.iter().map(ChildProcess::pid)),
            ProcessGroup::of("nats", [nats.as_ref().and_then(NatsServer::pid)]),
            ProcessGroup {
                name: "postgres",
                members: Members::Command("postgres"),
                in_total: true,
            },
            load_generator(),
        ],
    };
    roles.insert(0, gateway);
    let tenants = tenants(sable, &env, &url, args.orgs).await?;
    Ok(Stack {
        tenants,
        url,
        key,
        roles,
        meter,
        _provider: provider,
        _nats: nats,
        _database: database,
        _postgres: postgres,
        _data_dir: None,
    })
}

/// This process: the load's HTTP clients, and the fake provider and the round-trip counter,
/// which run in it too.
fn load_generator() -> ProcessGroup {
    ProcessGroup {
        name: "load_generator",
        members: Members::These(vec![std::process::id()]),
        in_total: false,
    }
}

/// The counter of the Postgres measured; says so when that server is set up unlike a
/// deployment's.
async fn commit_counter(database_url: &str) -> anyhow::Result<CommitCounter> {
    let mut commits = CommitCounter::connect(database_url).await?;
    let unusual = commits.unusual_settings().await?;
    if !unusual.is_empty() {
        eprintln!(
            "sable-bench: warning: this Postgres runs with {}, unlike a deployment's: its figures (throughput, the audit's cost) are not a deployment's",
            unusual.join(", ")
        );
    }
    Ok(commits)
}

/// A fresh database on the local Postgres (`SABLE_TEST_POSTGRES_URL`), or, when none is
/// reachable, on a private cluster started for the run.
async fn fresh_database() -> anyhow::Result<(TestDatabase, Option<PostgresCluster>)> {
    let shared_error = match TestDatabase::create().await {
        Ok(database) => return Ok((database, None)),
        Err(error) => error,
    };
    eprintln!("no Postgres reachable ({shared_error:#}); starting a private cluster");
    let cluster = PostgresCluster::start().await.with_context(|| {
        format!(
            "no SABLE_DATABASE_URL, no Postgres reachable ({shared_error:#}), and no private cluster could be started"
        )
    })?;
    let database = TestDatabase::create_on(&cluster.admin_url()).await?;
    Ok((database, Some(cluster)))
}

/// `--orgs`: the orgs' keys (none without it).
async fn tenants(
    sable: &std::path::Path,
    env: &[(String, String)],
    url: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let platform =
        sable_testkit::run_to_completion(sable, &["admin", "key", "create", "--platform"], env)
            .await?;
    create_tenants(url, &platform, count).await
}

/// Makes `count` orgs through the API (the platform key), each with an admin key and its
/// own agent `tenant`; returns the keys in the orgs' order.
async fn create_tenants(url: &str, platform: &str, count: usize) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = std::time::Instant::now();
    let keys: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(0..count)
        .map(|index| {
            let http = http.clone();
            async move {
                let org = post_json(&http, "POST", &format!("{url}/v1/orgs"), platform, serde_json::json!({"name": format!("tenant-{index}")})).await?;
                let org_id = org["id"].as_str().context("org id")?;
                let key = post_json(&http, "POST", &format!("{url}/v1/orgs/{org_id}/keys"), platform, serde_json::json!({"role": "admin"})).await?;
                let key = key["key"].as_str().context("key")?.to_owned();
                post_json(
                    &http,
                    "PUT",
                    &format!("{url}/v1/agents/tenant"),
                    &key,
                    serde_json::json!({"prompt": format!("You are the assistant of tenant {index}.")}),
                )
                .await?;
                anyhow::Ok((index, key))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut keys = keys.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    keys.sort_by_key(|(index, _)| *index);
    eprintln!(
        "sable-bench: {count} orgs with their own agent and key made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(keys.into_iter().map(|(_, key)| key).collect())
}

async fn post_json(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    key: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response = http
        .request(reqwest::Method::from_bytes(method.as_bytes())?, url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{method} {url}: {status} {body}");
    Ok(body)
}
