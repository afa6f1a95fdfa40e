//! `TestStack`: one test's own Sable deployment, started the way the README says.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use sable_testkit::{
    ChildProcess, FakeProvider, NatsServer, PostgresCluster, TcpProxy, TestDatabase, wait_for,
    workspace_root,
};
use serde_json::{Value, json};

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const TURN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a stack.
#[derive(Default)]
pub struct StackOptions {
    pub gateways: usize,
    pub workers: usize,
    /// Route the roles' Postgres connections through a proxy the test can cut.
    pub postgres_proxy: bool,
    /// Put the database on a private Postgres cluster the test may stop and start.
    pub private_postgres: bool,
    pub env: Vec<(&'static str, String)>,
}

pub struct Gateway {
    pub process: ChildProcess,
    pub url: String,
}

/// A running deployment: database, NATS, fake provider, gateways and workers.
pub struct TestStack {
    pub database: TestDatabase,
    /// The private cluster holding `database`, when the options asked for one (declared
    /// after it so the database is dropped first).
    pub postgres: Option<PostgresCluster>,
    pub nats: NatsServer,
    pub provider: FakeProvider,
    pub postgres_proxy: Option<TcpProxy>,
    pub prefix: String,
    pub org_id: String,
    pub key: String,
    pub gateways: Vec<Gateway>,
    pub workers: Vec<ChildProcess>,
    /// Each worker's `/metrics` URL, in spawn order.
    pub worker_metrics: Vec<String>,
    pub http: reqwest::Client,
    extra_env: Vec<(&'static str, String)>,
}

/// Where a Postgres URL's server is: its `host[:port]` as written, and as `host:port`.
pub struct PostgresServer {
    pub as_written: String,
    pub address: String,
}

/// The server of `postgres://user@host:port/database` (port 5432 when none is given),
/// so a proxy goes in front of whichever server `SABLE_TEST_POSTGRES_URL` names.
pub fn postgres_server(url: &str) -> anyhow::Result<PostgresServer> {
    let (_, rest) = url
        .split_once("://")
        .context("a Postgres URL has a scheme")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let as_written = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    anyhow::ensure!(!as_written.is_empty(), "no host in {url}");
    let has_port = as_written
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let address = if has_port {
        as_written.to_owned()
    } else {
        format!("{as_written}:5432")
    };
    Ok(PostgresServer {
        as_written: as_written.to_owned(),
        address,
    })
}

pub fn sable_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sable"))
}

impl TestStack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        sable_llm::install_crypto_provider();
        let postgres = if options.private_postgres {
            Some(PostgresCluster::start().await?)
        } else {
            None
        };
        let database = match &postgres {
            Some(cluster) => TestDatabase::create_on(&cluster.admin_url()).await?,
            None => TestDatabase::create().await?,
        };
        let nats = NatsServer::start().await?;
        let provider = FakeProvider::start().await?;
        let postgres_proxy = if options.postgres_proxy {
            let server = postgres_server(&database.url)?;
            let address = tokio::net::lookup_host(&server.address)
                .await?
                .next()
                .with_context(|| format!("cannot resolve {}", server.address))?;
            Some(TcpProxy::start(address).await?)
        } else {
            None
        };
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut stack = Self {
            database,
            postgres,
            nats,
            provider,
            postgres_proxy,
            prefix,
            org_id: String::new(),
            key: String::new(),
            gateways: Vec::new(),
            workers: Vec::new(),
            worker_metrics: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
            extra_env: options.env,
        };
        stack.sable(&["migrate"]).await?;
        stack.org_id = stack.sable(&["admin", "org", "create", "acme"]).await?;
        stack.key = stack
            .sable(&["admin", "key", "create", "--org", &stack.org_id])
            .await?;
        for _ in 0..options.workers {
            stack.spawn_worker().await?;
        }
        for _ in 0..options.gateways {
            stack.spawn_gateway().await?;
        }
        Ok(stack)
    }

    /// The environment every role of this stack gets: its own database, NATS server and
    /// prefix, the fake provider, and short timings so recovery paths run in seconds.
    pub fn env(&self) -> Vec<(String, String)> {
        let database_url = match (&self.postgres_proxy, postgres_server(&self.database.url)) {
            (Some(proxy), Ok(server)) => self.database.url.replacen(
                &format!("{}/", server.as_written),
                &format!("{}/", proxy.addr),
                1,
            ),
            _ => self.database.url.clone(),
        };
        let mut env: Vec<(String, String)> = [
            ("SABLE_DATABASE_URL", database_url),
            ("SABLE_NATS_URL", self.nats.url()),
            ("SABLE_NATS_PREFIX", self.prefix.clone()),
            ("SABLE_GATEWAY_ADDR", "127.0.0.1:0".into()),
            ("SABLE_METRICS_ADDR", "127.0.0.1:0".into()),
            (
                "SABLE_AGENTS_DIR",
                workspace_root().join("agents").display().to_string(),
            ),
            ("OPENAI_BASE_URL", self.provider.base_url.clone()),
            ("OPENAI_API_KEY", "test-key".into()),
            ("SABLE_MODEL", "fake-model".into()),
            ("SABLE_LEASE_TTL_MS", "2000".into()),
            ("SABLE_SWEEP_INTERVAL_MS", "200".into()),
            ("SABLE_SWEEP_AFTER_MS", "1000".into()),
            ("SABLE_WAIT_POLL_INTERVAL_MS", "200".into()),
            ("SABLE_DB_ACQUIRE_TIMEOUT_MS", "1000".into()),
            // Several roles per test, two tests at a time: stay well under Postgres's 100.
            ("SABLE_DB_MAX_CONNECTIONS", "4".into()),
            ("SABLE_PROVIDER_TIMEOUT_MS", "10000".into()),
            ("SABLE_PROVIDER_IDLE_TIMEOUT_MS", "5000".into()),
            ("RUST_LOG", "info,sable_store=debug".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        env.extend(
            self.extra_env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        env
    }

    /// Adds a variable to the environment of roles spawned from now on.
    pub fn set_env(&mut self, key: &'static str, value: String) {
        self.extra_env.push((key, value));
    }

    /// Every line every role has logged so far, whole (not a tail).
    pub fn full_logs(&self) -> anyhow::Result<String> {
        let mut logs = String::new();
        for process in self
            .gateways
            .iter()
            .map(|gateway| &gateway.process)
            .chain(self.workers.iter())
        {
            logs.push_str(&std::fs::read_to_string(&process.log_path)?);
        }
        Ok(logs)
    }

    /// Runs a one-shot `sable` command and returns its stdout, trimmed.
    pub async fn sable(&self, args: &[&str]) -> anyhow::Result<String> {
        run_sable(args, &self.env()).await
    }

    /// A new key of the stack's org with `role` (`sable admin key create --role`).
    pub async fn key_with_role(&self, role: &str) -> anyhow::Result<String> {
        let org = self.org_id.clone();
        self.sable(&["admin", "key", "create", "--org", &org, "--role", role])
            .await
    }

    pub async fn spawn_worker(&mut self) -> anyhow::Result<()> {
        self.spawn_worker_with(&[]).await.map(|_| ())
    }

    /// Starts a worker with `env` added to the stack's, waits until it pulls turns, and
    /// returns it (also kept in `workers`).
    pub async fn spawn_worker_with(
        &mut self,
        env: &[(&str, String)],
    ) -> anyhow::Result<&mut ChildProcess> {
        let name = format!("worker{}", self.workers.len());
        let mut worker = self.spawn_role(&name, "worker", env)?;
        let metrics_url = worker
            .wait_for_line("sable worker metrics on", READY_TIMEOUT)
            .await?;
        worker.wait_for_line("sable worker", READY_TIMEOUT).await?;
        self.worker_metrics.push(metrics_url);
        self.workers.push(worker);
        Ok(self.workers.last_mut().expect("just pushed"))
    }

    pub async fn spawn_gateway(&mut self) -> anyhow::Result<()> {
        self.spawn_gateway_with(&[]).await.map(|_| ())
    }

    /// Starts a gateway with `env` added to the stack's, waits until it is ready, and
    /// returns it (also kept in `gateways`).
    pub async fn spawn_gateway_with(
        &mut self,
        env: &[(&str, String)],
    ) -> anyhow::Result<&mut Gateway> {
        let name = format!("gateway{}", self.gateways.len());
        let mut process = self.spawn_role(&name, "gateway", env)?;
        let url = process
            .wait_for_line("sable gateway listening on", READY_TIMEOUT)
            .await?;
        let gateway = Gateway { process, url };
        let ready_url = format!("{}/readyz", gateway.url);
        let http = self.http.clone();
        wait_for("the gateway to be ready", READY_TIMEOUT, || {
            let (http, ready_url) = (http.clone(), ready_url.clone());
            async move {
                http.get(&ready_url)
                    .send()
                    .await
                    .ok()
                    .filter(|response| response.status().is_success())
            }
        })
        .await
        .with_context(|| gateway.process.log_tail())?;
        self.gateways.push(gateway);
        Ok(self.gateways.last_mut().expect("just pushed"))
    }

    /// Starts one role with `env` added to the stack's, without waiting for anything and
    /// without keeping it in `workers` or `gateways`.
    pub fn spawn_role(
        &self,
        name: &str,
        role: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<ChildProcess> {
        let mut role_env = self.env();
        role_env.extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        ChildProcess::spawn(name, &sable_binary(), &[role], &role_env, &workspace_root())
    }

    /// A handle on the HTTP API of gateway 0 that borrows nothing from the stack, so a
    /// load can run while the test stops and starts parts of the stack.
    pub fn client(&self) -> ApiClient {
        ApiClient {
            url: self.gateways[0].url.clone(),
            key: self.key.clone(),
            http: self.http.clone(),
        }
    }

    pub fn url(&self, gateway: usize, path: &str) -> String {
        format!("{}{path}", self.gateways[gateway].url)
    }

    /// `POST /v1/messages` through a gateway with this stack's key.
    pub async fn post_message(
        &self,
        gateway: usize,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.post_message_with_key(gateway, &self.key, body).await
    }

    pub async fn post_message_with_key(
        &self,
        gateway: usize,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(self.url(gateway, "/v1/messages"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await?;
        read_json(response).await
    }

    /// `method path` on the first gateway with `key` and an optional JSON body: the
    /// answer's status and body (`null` when empty).
    pub async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, self.url(0, path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read_json(request.send().await?).await
    }

    pub async fn get(&self, gateway: usize, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .get(self.url(gateway, path))
            .bearer_auth(&self.key)
            .send()
            .await?;
        read_json(response).await
    }

    /// Polls `GET /v1/turns/{id}` until the turn is done or failed.
    pub async fn wait_for_final_turn(&self, turn_id: &str) -> anyhow::Result<Value> {
        let path = format!("/v1/turns/{turn_id}");
        wait_for(
            &format!("turn {turn_id} to finish"),
            TURN_TIMEOUT,
            || async {
                let (status, body) = self.get(0, &path).await.ok()?;
                let finished = status == StatusCode::OK
                    && matches!(body["status"].as_str(), Some("done" | "failed"));
                finished.then_some(body)
            },
        )
        .await
        .with_context(|| self.logs())
    }

    /// The tails of every role's log, for failure messages.
    pub fn logs(&self) -> String {
        let processes = self
            .gateways
            .iter()
            .map(|gateway| &gateway.process)
            .chain(self.workers.iter());
        processes
            .map(|process| {
                format!(
                    "--- {} ({})\n{}",
                    process.name,
                    process.log_path.display(),
                    process.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Counts rows straight from Postgres (not through the proxy).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        let (value,): (i64,) = sqlx::query_as(sql)
            .fetch_one(self.database.store.pool())
            .await?;
        Ok(value)
    }
}

pub async fn run_sable(args: &[&str], env: &[(String, String)]) -> anyhow::Result<String> {
    sable_testkit::run_to_completion(&sable_binary(), args, env).await
}

pub async fn read_json(response: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await?;
    let body = if text.is_empty() {
        json!(null)
    } else {
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?
    };
    Ok((status, body))
}

/// Asserts the error shape `{"error":{"code","message"}}` with the given status and code.
/// The one JSON line a client script (Python SDK, browser) printed, or an error with
/// its output and the stack's logs when it failed.
pub fn printed_json(
    stack: &TestStack,
    what: &str,
    output: &std::process::Output,
) -> anyhow::Result<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        stdout,
        stack.logs()
    );
    serde_json::from_str(stdout.trim()).with_context(|| format!("not JSON: {stdout}"))
}

pub fn assert_error(actual: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(actual.0, status, "unexpected status, body {}", actual.1);
    assert_eq!(
        actual.1["error"]["code"], code,
        "unexpected body {}",
        actual.1
    );
    assert!(
        actual.1["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "no message in {}",
        actual.1
    );
}

/// The HTTP API of a running deployment, distributed or embedded, so one test body can
/// run against both.
pub trait Api: Sync {
    fn base_url(&self, gateway: usize) -> String;
    fn api_key(&self) -> &str;
    fn client(&self) -> &reqwest::Client;
    fn gateway_count(&self) -> usize;

    fn post(
        &self,
        gateway: usize,
        body: &Value,
    ) -> impl std::future::Future<Output = anyhow::Result<(StatusCode, Value)>> + Send {
        let request = self
            .client()
            .post(format!("{}/v1/messages", self.base_url(gateway)))
            .bearer_auth(self.api_key())
            .json(body);
        async move { read_json(request.send().await?).await }
    }

    fn fetch(
        &self,
        gateway: usize,
        path: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<(StatusCode, Value)>> + Send {
        let request = self
            .client()
            .get(format!("{}{path}", self.base_url(gateway)))
            .bearer_auth(self.api_key());
        async move { read_json(request.send().await?).await }
    }

    /// Polls `GET /v1/turns/{id}` until the turn is done or failed.
    fn final_turn(
        &self,
        turn_id: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<Value>> + Send {
        async move {
            let path = format!("/v1/turns/{turn_id}");
            wait_for(
                &format!("turn {turn_id} to finish"),
                TURN_TIMEOUT,
                || async {
                    let (status, body) = self.fetch(0, &path).await.ok()?;
                    let finished = status == StatusCode::OK
                        && matches!(body["status"].as_str(), Some("done" | "failed"));
                    finished.then_some(body)
                },
            )
            .await
        }
    }
}

impl Api for TestStack {
    fn base_url(&self, gateway: usize) -> String {
        self.gateways[gateway].url.clone()
    }

    fn api_key(&self) -> &str {
        &self.key
    }

    fn client(&self) -> &reqwest::Client {
        &self.http
    }

    fn gateway_count(&self) -> usize {
        self.gateways.len()
    }
}

/// The HTTP API of one gateway, detached from its stack.
pub struct ApiClient {
    pub url: String,
    pub key: String,
    pub http: reqwest::Client,
}

/// `Api` for a one-gateway target with `url`, `key` and `http` fields.
macro_rules! single_gateway_api {
    ($target:ty) => {
        impl Api for $target {
            fn base_url(&self, _gateway: usize) -> String {
                self.url.clone()
            }

            fn api_key(&self) -> &str {
                &self.key
            }

            fn client(&self) -> &reqwest::Client {
                &self.http
            }

            fn gateway_count(&self) -> usize {
                1
            }
        }
    };
}

single_gateway_api!(ApiClient);

/// `sable dev` in a child process: embedded store in a temporary directory, in-process
/// bus, the fake provider, and a NATS URL that leads nowhere (it must not be needed).
pub struct DevStack {
    pub process: ChildProcess,
    pub provider: FakeProvider,
    pub data_dir: PathBuf,
    pub url: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl DevStack {
    pub async fn start() -> anyhow::Result<Self> {
        sable_llm::install_crypto_provider();
        let provider = FakeProvider::start().await?;
        let data_dir =
            std::env::temp_dir().join(format!("sable-dev-{}", uuid::Uuid::new_v4().simple()));
        let (process, url, key) = spawn_dev(&provider, &data_dir).await?;
        let key =
            key.ok_or_else(|| anyhow::anyhow!("sable dev printed no API key on first start"))?;
        Ok(Self {
            process,
            provider,
            data_dir,
            url,
            key,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
        })
    }

    /// Stops `sable dev` (SIGTERM) and starts it again on the same data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.process.terminate(Duration::from_secs(20)).await?,
            "sable dev did not exit cleanly:\n{}",
            self.process.log_tail()
        );
        let (process, url, _) = spawn_dev(&self.provider, &self.data_dir).await?;
        (self.process, self.url) = (process, url);
        Ok(())
    }
}

pub fn dev_env(provider: &FakeProvider, data_dir: &std::path::Path) -> Vec<(String, String)> {
    [
        (
            "SABLE_DATABASE_URL",
            format!("sqlite://{}/sable.db", data_dir.display()),
        ),
        ("SABLE_NATS_URL", "nats://127.0.0.1:1".to_owned()),
        ("SABLE_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        (
            "SABLE_AGENTS_DIR",
            workspace_root().join("agents").display().to_string(),
        ),
        ("OPENAI_BASE_URL", provider.base_url.clone()),
        ("OPENAI_API_KEY", "test-key".to_owned()),
        ("SABLE_MODEL", "fake-model".to_owned()),
        ("SABLE_WAIT_POLL_INTERVAL_MS", "200".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

async fn spawn_dev(
    provider: &FakeProvider,
    data_dir: &std::path::Path,
) -> anyhow::Result<(ChildProcess, String, Option<String>)> {
    spawn_dev_with(provider, data_dir, &[]).await
}

/// Starts `sable dev` with `extra` added to [`dev_env`]; returns the process, its URL and
/// the API key it printed on a first start.
pub async fn spawn_dev_with(
    provider: &FakeProvider,
    data_dir: &std::path::Path,
    extra: &[(String, String)],
) -> anyhow::Result<(ChildProcess, String, Option<String>)> {
    let mut env = dev_env(provider, data_dir);
    env.extend(extra.iter().cloned());
    let mut process =
        ChildProcess::spawn("dev", &sable_binary(), &["dev"], &env, &workspace_root())?;
    let url = process
        .wait_for_line("sable gateway listening on", READY_TIMEOUT)
        .await?;
    let status = process
        .wait_for_line("sable dev ready", READY_TIMEOUT)
        .await?;
    // The next line says whether this was the first start (and a key follows).
    let welcome = process.wait_for_line("", READY_TIMEOUT).await?;
    let key = if welcome.starts_with("Created org") {
        Some(process.wait_for_line("API key:", READY_TIMEOUT).await?)
    } else {
        None
    };
    anyhow::ensure!(status.starts_with("in "), "unexpected ready line: {status}");
    Ok((process, url, key))
}

single_gateway_api!(DevStack);

impl Drop for DevStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
