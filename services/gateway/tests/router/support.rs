//! `TestApp`: the gateway's real router on a database of its own and an in-process bus,
//! served on 127.0.0.1:0 and reachable in-process with `oneshot`; and the request
//! builder, refusal tables and store fingerprint the route tests share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use sable_bus::Bus;
use sable_core::{AgentId, OrgId, Role, SessionId, TurnId};
use sable_gateway::{FeishuConfig, GatewayConfig, HttpLimits};
use sable_runtime::{AgentCatalog, Bindings};
use sable_store::{
    Actor, NewApiKey, NewApproval, NewToolCall, NextTurn, SecretsKey, SessionFilter, Store,
    StoreOptions,
};
use sable_testkit::TestDatabase;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Which store a [`TestApp`] runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// The embedded store, on a SQLite file of the test's own.
    Sqlite,
    /// A fresh database on the local Postgres (`SABLE_TEST_POSTGRES_URL`).
    Postgres,
}

/// An org and the keys the tests present for it.
pub struct TestOrg {
    pub id: OrgId,
    pub admin_key: String,
    pub member_key: String,
    pub operator_key: String,
    /// One key of each org role, least first.
    pub keys: Vec<(Role, String)>,
}

/// The gateway's router on real state, both served over HTTP and callable in-process.
pub struct TestApp {
    /// Where the router is served (the gateway's own accept loop).
    pub address: SocketAddr,
    /// The same router on the same state, for `oneshot` requests.
    pub router: Router,
    pub store: Store,
    pub bus: Bus,
    /// The org the tests act as.
    pub org: TestOrg,
    /// Another org, whose data `org` must never reach.
    pub other_org: TestOrg,
    /// A key of `org` that was revoked before the app started.
    pub revoked_key: String,
    /// A platform administrator's key (`sable admin key create --platform`).
    pub platform_key: String,
    /// The change feed the app's caches follow; nothing polls it unless a test does.
    pub change_feed: std::sync::Arc<sable_runtime::ChangeFeed>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _database: Database,
}

/// Ids of one of each thing an org can own, made through the API where it can be.
pub struct Seeded {
    pub session_id: String,
    pub turn_id: String,
    pub cron_task_id: String,
    /// A pending approval of a parked turn (parked through the store, as a worker does).
    pub approval_id: String,
    pub key_prefix: String,
    pub feishu_app_id: String,
    /// The org's own agent, model profile, provider and MCP server (per-org
    /// configuration).
    pub agent_id: String,
    pub profile_name: String,
    pub provider_name: String,
    pub mcp_server_name: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> anyhow::Result<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts an app whose configuration `configure` changed first.
    pub async fn spawn_with(
        backend: Backend,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<Self> {
        let (store, database) = Database::create(backend).await?;
        let org = create_org(&store, "acme").await?;
        let other_org = create_org(&store, "globex").await?;
        let revoked = store
            .create_api_key(
                &NewApiKey::new(org.id, Role::Member).named(Some("old")),
                &Actor::system(),
            )
            .await?;
        let platform_key = store
            .create_api_key(
                &NewApiKey::new(sable_store::platform_org(), Role::Platform),
                &Actor::system(),
            )
            .await?
            .key;
        store
            .revoke_api_key(Some(org.id), key_prefix(&revoked.key), &Actor::system())
            .await?;
        let mut config = test_config()?;
        configure(&mut config);
        let limits = config.http.clone();
        let bus = Bus::local();
        bus.ensure_topology().await?;
        let shutdown = CancellationToken::new();
        let (router, change_feed) = sable_gateway::testing::router_and_feed(
            config,
            store.clone(),
            bus.clone(),
            shutdown.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn({
            let (router, shutdown) = (router.clone(), shutdown.clone());
            async move { sable_gateway::testing::serve(listener, router, &limits, shutdown).await }
        });
        Ok(Self {
            address,
            router,
            store,
            bus,
            org,
            other_org,
            revoked_key: revoked.key,
            platform_key,
            change_feed,
            shutdown,
            server,
            _database: database,
        })
    }

    /// Sends `call` to the router in-process.
    pub async fn send(&self, call: Call) -> Reply {
        send(&self.router, call).await
    }

    /// The URL of `path` on the served router.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends every refusal, checks each got its status and `{"error":{"code","message"}}`
    /// body with its code, and that the store reads the same afterwards. Reports every
    /// wrong answer at once.
    pub async fn assert_refused(&self, refusals: Vec<Refusal>) -> anyhow::Result<()> {
        let before = self.fingerprint().await?;
        let total = refusals.len();
        let mut wrong = Vec::new();
        for refusal in refusals {
            let reply = self.send(refusal.call).await;
            if let Err(problem) = check_error(&reply, refusal.status, refusal.code) {
                wrong.push(format!("{}: {problem}", refusal.what));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {total} refusals were answered wrongly:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        );
        let changes = changes(&before, &self.fingerprint().await?);
        assert!(
            changes.is_empty(),
            "refused requests changed the store:\n  {}",
            changes.join("\n  ")
        );
        Ok(())
    }

    /// Everything the API can write, read back through the store, one line per record:
    /// equal fingerprints mean nothing was written. A key's last use is left out (it is
    /// recorded off the request's path, by design).
    pub async fn fingerprint(&self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for org in self.store.list_orgs().await? {
            lines.push(format!("{org:?}"));
            for key in self.store.api_keys(org.id).await? {
                lines.push(format!(
                    "key {} {:?} role={} revoked={:?}",
                    key.prefix, key.name, key.role, key.revoked_at
                ));
            }
            let every_session = SessionFilter {
                limit: 10_000,
                ..SessionFilter::default()
            };
            for session in self.store.list_sessions(org.id, &every_session).await? {
                let session_id = SessionId::from_uuid(session.id);
                lines.push(format!("{session:?}"));
                for turn in self.store.session_turns(org.id, session_id).await? {
                    lines.push(format!("{turn:?}"));
                }
                let messages = self.store.session_messages(org.id, session_id).await?;
                lines.push(format!("{} messages", messages.len()));
            }
            lines.push(format!("quotas {:?}", self.store.org_quotas(org.id).await?));
            for task in self.store.cron_tasks(org.id).await? {
                lines.push(format!("{task:?}"));
                for run in self.store.cron_runs(org.id, task.id, 1_000).await? {
                    lines.push(format!("{run:?}"));
                }
            }
            for approval in self.store.approvals(org.id, None).await? {
                lines.push(format!("{approval:?}"));
            }
            for app in self.store.feishu_apps(org.id).await? {
                lines.push(format!("{app:?}"));
            }
        }
        Ok(lines)
    }

    /// Gives `org` a session with a turn, a cron task, a parked turn's pending approval,
    /// a member key and a Feishu app.
    pub async fn seed(&self, org: &TestOrg) -> anyhow::Result<Seeded> {
        let message = self
            .accepted(
                Call::post("/v1/messages")
                    .key(&org.member_key)
                    .json(json!({"text": "hello"})),
            )
            .await?;
        let task = self
            .accepted(
                Call::post("/v1/cron/tasks")
                    .key(&org.operator_key)
                    .json(json!({
                        "name": "daily digest",
                        "schedule": "0 9 * * *",
                        "prompt": "summarise yesterday",
                    })),
            )
            .await?;
        let key = self
            .accepted(
                Call::post("/v1/keys")
                    .key(&org.admin_key)
                    .json(json!({"name": "ci"})),
            )
            .await?;
        let app_id = format!("cli_{}", uuid::Uuid::new_v4().simple());
        self.accepted(
            Call::post("/v1/channels/feishu/apps")
                .key(&org.admin_key)
                .json(feishu_app_body(&app_id)),
        )
        .await?;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let (agent_id, profile_name, provider_name, mcp_server_name) = (
            format!("agent-{suffix}"),
            format!("profile-{suffix}"),
            format!("provider-{suffix}"),
            format!("mcp-{suffix}"),
        );
        // Never dialled: the router tests run no sidecar.
        self.accepted(
            Call::put(format!("/v1/mcp-servers/{mcp_server_name}"))
                .key(&org.admin_key)
                .json(json!({"url": "http://mcp.invalid/mcp", "headers": {"Authorization": "Bearer seeded"}})),
        )
        .await?;
        self.accepted(
            Call::put(format!("/v1/providers/{provider_name}"))
                .key(&org.admin_key)
                .json(json!({"kind": "openai", "base_url": "http://provider.invalid/v1", "api_key": "sk-seeded"})),
        )
        .await?;
        self.accepted(
            Call::put(format!("/v1/model-profiles/{profile_name}"))
                .key(&org.admin_key)
                .json(json!({"provider": provider_name, "model": "m"})),
        )
        .await?;
        self.accepted(
            Call::put(format!("/v1/agents/{agent_id}"))
                .key(&org.admin_key)
                .json(json!({"prompt": "You help.", "model": {"profile": profile_name}})),
        )
        .await?;
        Ok(Seeded {
            agent_id,
            profile_name,
            provider_name,
            mcp_server_name,
            session_id: text(&message.body["session_id"])?,
            turn_id: text(&message.body["turn_id"])?,
            cron_task_id: text(&task.body["id"])?,
            approval_id: self.park_a_turn(org).await?,
            key_prefix: text(&key.body["prefix"])?,
            feishu_app_id: app_id,
        })
    }

    /// Posts a message and parks its turn on an approval of a `shell` call, as a worker
    /// would; returns the approval's id.
    pub async fn park_a_turn(&self, org: &TestOrg) -> anyhow::Result<String> {
        let accepted = self
            .accepted(
                Call::post("/v1/messages")
                    .key(&org.member_key)
                    .json(json!({"text": "clean up the disk"})),
            )
            .await?;
        let session_id: SessionId = text(&accepted.body["session_id"])?.parse()?;
        let turn_id: TurnId = text(&accepted.body["turn_id"])?.parse()?;
        let owner = "router-test-worker";
        let lease = Duration::from_secs(60);
        let NextTurn::Begun(begun) = self
            .store
            .begin_next_turn(org.id, session_id, owner, lease, 10)
            .await?
        else {
            anyhow::bail!("the new turn did not begin");
        };
        anyhow::ensure!(begun.turn.id == turn_id, "another turn began");
        let call = NewToolCall {
            call_id: "call-1".to_owned(),
            tool: "shell".to_owned(),
            arguments: r#"{"command":"rm -rf /tmp/cache"}"#.to_owned(),
        };
        self.store
            .begin_tool_round(&begun.turn, begun.attempt, 1, "", &[call])
            .await?;
        let approval = NewApproval {
            round: 1,
            position: 0,
            tool: "shell".to_owned(),
            arguments: r#"{"command":"rm -rf /tmp/cache"}"#.to_owned(),
            expires_in: Duration::from_secs(3_600),
        };
        anyhow::ensure!(
            self.store
                .park_turn(&begun.turn, begun.attempt, &approval)
                .await?,
            "the turn was not parked"
        );
        let parked = self.store.approvals(org.id, Some("pending")).await?;
        let approval = parked
            .iter()
            .find(|approval| approval.turn_id == turn_id.as_uuid())
            .ok_or_else(|| anyhow::anyhow!("no approval for the parked turn"))?;
        Ok(approval.id.to_string())
    }

    /// Sends `call` and fails unless it succeeded.
    pub async fn accepted(&self, call: Call) -> anyhow::Result<Reply> {
        let what = format!("{} {}", call.method, call.path);
        let reply = self.send(call).await;
        anyhow::ensure!(
            reply.status.is_success(),
            "{what} answered {}: {}",
            reply.status,
            reply.body
        );
        Ok(reply)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.server.abort();
    }
}

/// The body of a valid Feishu app without an encrypt key.
pub fn feishu_app_body(app_id: &str) -> Value {
    json!({
        "app_id": app_id,
        "mode": "webhook",
        "app_secret": "app-secret",
        "verification_token": "verification-token",
    })
}

/// A gateway configuration for tests: the workspace's agents (`default` only), no
/// bindings, no webhook channel, no tools, a fresh secrets key for Feishu apps, and
/// short waits.
pub fn test_config() -> anyhow::Result<GatewayConfig> {
    // reqwest is built without a crypto provider (`main` installs ring's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = sable_testkit::workspace_root();
    let agents = AgentCatalog::load(&root.join("agents"))?;
    let models = sable_llm::CatalogSpec::from_toml(
        &std::fs::read_to_string(root.join("config/providers.toml"))?,
        &std::fs::read_to_string(root.join("config/models.toml"))?,
    )?;
    Ok(GatewayConfig {
        org_base: sable_runtime::OrgConfigBase {
            routing: sable_runtime::IntakeRouting {
                default_agent: AgentId::parse("default")?,
                agents: agents.ids().map(str::to_owned).collect(),
                bindings: Bindings::default(),
            },
            agents,
            models,
            keys: Default::default(),
            mcp_servers: Vec::new(),
        },
        org_config_refresh: Duration::from_millis(200),
        wait_timeout: Duration::from_millis(200),
        wait_poll_interval: Duration::from_millis(50),
        sweep_interval: Duration::from_secs(1),
        sweep_after: Duration::from_secs(5),
        webhook: None,
        faults: sable_core::FaultPoints::default(),
        langfuse_host: None,
        langfuse_project_id: None,
        live_within: Duration::from_secs(10),
        http: HttpLimits::default(),
        tools: sable_tools::ToolRegistry::default(),
        feishu: FeishuConfig {
            secrets_key: Some(SecretsKey::from_base64(&SecretsKey::generate_base64())?),
            client: reqwest::Client::builder().build()?,
            rate_limit_backoff: Duration::from_millis(10),
            stream_interval: Duration::from_millis(50),
            max_rate_limit_retries: 0,
            apps_refresh: Duration::from_secs(1),
        },
        audit: sable_gateway::AuditConfig::default(),
        admin_key: None,
        quota_cache: Duration::from_millis(1_000),
    })
}

/// Sends `call` to `router` in-process.
pub async fn send(router: &Router, call: Call) -> Reply {
    let response = router
        .clone()
        .oneshot(call.into_request())
        .await
        .unwrap_or_else(|never| match never {});
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_not_json| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// An answer: status, headers and the body as JSON (a string when it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// One request, built up by method, path, key, headers and body.
pub struct Call {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Body::empty(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    pub fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
    }

    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// Presents `key` as a bearer token.
    pub fn key(self, key: &str) -> Self {
        self.header(AUTHORIZATION.as_str(), format!("Bearer {key}"))
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// A JSON body, declared as `application/json`.
    pub fn json(self, body: Value) -> Self {
        self.header(CONTENT_TYPE.as_str(), "application/json")
            .body(body.to_string())
    }

    /// A body as given, with whatever content type the headers declare (none by default).
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    fn into_request(self) -> Request<Body> {
        let mut request = Request::builder().method(self.method).uri(self.path);
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        request.body(self.body).expect("a well-formed test request")
    }
}

/// A request the router must refuse, with the status and error code it must answer.
pub struct Refusal {
    what: String,
    call: Call,
    status: StatusCode,
    code: &'static str,
}

pub fn refusal(
    what: impl Into<String>,
    call: Call,
    status: StatusCode,
    code: &'static str,
) -> Refusal {
    Refusal {
        what: what.into(),
        call,
        status,
        code,
    }
}

/// The ways of presenting no valid key, each 401 `unauthorized`: none, another scheme,
/// garbage, a well-formed key nobody issued, and a revoked key. `body` is sent as JSON
/// when given, so a write route sees an otherwise valid request.
pub fn unauthorized(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> Vec<Refusal> {
    let call = || {
        let call = Call::new(method.clone(), path);
        match body {
            Some(body) => call.json(body.clone()),
            None => call,
        }
    };
    let forged = format!("sable_{}_{}", "0".repeat(12), "0".repeat(48));
    let what = |how: &str| format!("{method} {path} {how}");
    vec![
        refusal(
            what("without a key"),
            call(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        refusal(
            what("with a Basic credential"),
            call().header("authorization", format!("Basic {}", app.org.admin_key)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        refusal(
            what("with a malformed key"),
            call().key("garbage"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        refusal(
            what("with a key nobody issued"),
            call().key(&forged),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        refusal(
            what("with a revoked key"),
            call().key(&app.revoked_key),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ]
}

/// `call` with the org's member key on an admin route: 403 `forbidden`.
pub fn forbidden(app: &TestApp, call: Call) -> Refusal {
    let what = format!("{} {} with a member key", call.method, call.path);
    refusal(
        what,
        call.key(&app.org.member_key),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
}

/// `method` on a path that routes only other methods: 405 `method_not_allowed`.
pub fn wrong_method(app: &TestApp, method: Method, path: &str) -> Refusal {
    refusal(
        format!("{method} {path}"),
        Call::new(method, path).key(&app.org.admin_key),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
}

/// Asserts that `reply` is the error `{"error":{"code","message"}}` with this status and
/// code, as JSON.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    if let Err(problem) = check_error(reply, status, code) {
        panic!("{problem}");
    }
}

fn check_error(reply: &Reply, status: StatusCode, code: &str) -> Result<(), String> {
    let seen = format!("{} {}", reply.status, reply.body);
    if reply.status != status {
        return Err(format!("expected {status} {code}, got {seen}"));
    }
    let is_json = reply
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(format!("not declared JSON: {seen}"));
    }
    let error = reply.body.as_object().and_then(|body| match body.len() {
        1 => body.get("error")?.as_object(),
        _ => None,
    });
    let shaped = error.is_some_and(|error| {
        error.len() == 2
            && error["code"].is_string()
            && error["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty())
    });
    if !shaped {
        return Err(format!(
            "not {{\"error\":{{\"code\",\"message\"}}}}: {seen}"
        ));
    }
    if reply.body["error"]["code"] != code {
        return Err(format!("expected code {code}, got {seen}"));
    }
    Ok(())
}

/// The lines of `after` that `before` lacks (`+`) and those it lost (`-`).
pub fn changes(before: &[String], after: &[String]) -> Vec<String> {
    let added = after
        .iter()
        .filter(|line| !before.contains(line))
        .map(|line| format!("+ {line}"));
    let removed = before
        .iter()
        .filter(|line| !after.contains(line))
        .map(|line| format!("- {line}"));
    added.chain(removed).collect()
}

/// The string at `value`, or an error naming what was there instead.
pub fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("expected a string, got {value}"))
}

/// The public part of a key, `sable_<prefix>_<secret>`.
pub fn key_prefix(key: &str) -> &str {
    key.split('_').nth(1).unwrap_or_default()
}

async fn create_org(store: &Store, name: &str) -> anyhow::Result<TestOrg> {
    let id = store.create_org(name).await?;
    let mut keys = Vec::new();
    for role in Role::ORG_ROLES {
        let new = NewApiKey::new(id, role).named(Some(role.as_str()));
        keys.push((
            role,
            store.create_api_key(&new, &Actor::system()).await?.key,
        ));
    }
    let key_of = |wanted: Role| {
        keys.iter()
            .find(|(role, _)| *role == wanted)
            .map(|(_, key)| key.clone())
            .unwrap_or_default()
    };
    Ok(TestOrg {
        id,
        admin_key: key_of(Role::Admin),
        member_key: key_of(Role::Member),
        operator_key: key_of(Role::Operator),
        keys,
    })
}

/// The database a [`TestApp`] owns, kept only to be removed when the app is dropped.
enum Database {
    Sqlite { _file: SqliteFile },
    Postgres { _database: TestDatabase },
}

impl Database {
    async fn create(backend: Backend) -> anyhow::Result<(Store, Self)> {
        match backend {
            Backend::Sqlite => {
                let file = SqliteFile::new();
                let url = format!("sqlite://{}", file.path().display());
                let store = Store::connect_lazy(&url, &StoreOptions::default())?;
                store.migrate().await?;
                Ok((store, Self::Sqlite { _file: file }))
            }
            Backend::Postgres => {
                let database = TestDatabase::create().await?;
                let store = Store::new(database.store.clone());
                Ok((
                    store,
                    Self::Postgres {
                        _database: database,
                    },
                ))
            }
        }
    }
}

/// A directory of its own for one SQLite database file.
struct SqliteFile {
    directory: PathBuf,
}

impl SqliteFile {
    fn new() -> Self {
        let directory =
            std::env::temp_dir().join(format!("sable-router-{}", uuid::Uuid::new_v4().simple()));
        Self { directory }
    }

    fn path(&self) -> PathBuf {
        self.directory.join("sable.db")
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
