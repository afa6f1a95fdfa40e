//! Per-org configuration: an org's own agents, model profiles, providers (with their API
//! keys), MCP servers (with their headers) and settings, stored as items in the database
//! and layered over the deployment's files (the files are every org's defaults; an org's
//! item of the same name replaces the file's for that org only; an org's MCP servers are
//! added to the deployment's shared ones, never in place of one).
//!
//! `OrgConfig::build` turns the stored items into what turns run with, validating every
//! reference and naming the item and field at fault; the gateway runs it on a change
//! before storing it. `OrgConfigs` caches built configurations by the org's version: the
//! worker asks for the version its turn began with (so a change is seen by the next
//! turn, exactly), intake asks for one checked at most `refresh` ago, or still confirmed
//! by the change feed it follows ([`ChangeFeed`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sable_core::{AgentId, OrgId, Secret};
use sable_llm::{CatalogSpec, ModelClient, ProfileSpec, ProviderSpec};
use sable_proto::v1 as pb;
use sable_store::{ConfigItem, ConfigKind, OrgConfigSnapshot, SecretsKey, Store, StoreError};
use sable_telemetry::CapturePolicy;
use serde::Deserialize;

use crate::agents::field_error;
use crate::mcp_servers::{SharedMcpServer, build_servers};
use crate::turn::Models;
use crate::{AgentCatalog, AgentSpec, BindingRule, Bindings, ChangeFeed, IntakeRouting};

/// The one settings item of an org is stored under this name.
pub const SETTINGS_ITEM: &str = "org";

/// What the deployment's files give every org.
#[derive(Debug, Clone)]
pub struct OrgConfigBase {
    pub agents: AgentCatalog,
    pub routing: IntakeRouting,
    /// The providers and profiles of the files and the providers' keys.
    pub models: CatalogSpec,
    pub keys: BTreeMap<String, Secret>,
    /// The MCP sidecar's shared servers (`config/mcp.toml`), by name and transport.
    pub mcp_servers: Vec<SharedMcpServer>,
}

/// An org's stored configuration that does not hold together; names the item and field.
#[derive(Debug, thiserror::Error)]
pub enum OrgConfigError {
    #[error("{item}: {message}")]
    Invalid { item: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OrgConfigError {
    pub(crate) fn invalid(kind: ConfigKind, name: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            item: item_label(kind, name),
            message: message.into(),
        }
    }
}

/// `agent 'support'`, `provider 'openai'`, `settings`.
pub fn item_label(kind: ConfigKind, name: &str) -> String {
    match kind {
        ConfigKind::Settings => "settings".to_owned(),
        ConfigKind::ModelProfile => format!("model profile '{name}'"),
        ConfigKind::McpServer => format!("mcp server '{name}'"),
        other => format!("{} '{name}'", other.as_str()),
    }
}

/// An org's settings item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettingsSpec {
    /// The agent of messages no binding and no request names (else the deployment's).
    #[serde(default)]
    pub default_agent: Option<String>,
    /// The org's binding rules, tried before the deployment's.
    #[serde(default)]
    pub bindings: Vec<BindingRule>,
    /// Whether the org's prompts, replies and tool payloads may enter its turns' spans
    /// (`off`, `redacted`, `full`), over the deployment's `capture_content`; an
    /// operator's `capture_content_orgs` entry for the org still decides over it.
    #[serde(default)]
    pub capture: Option<CapturePolicy>,
}

/// What an org's turns and messages run with.
pub struct OrgConfig {
    /// The org's configuration version (0: the deployment's files only).
    pub version: i64,
    pub agents: AgentCatalog,
    pub routing: Arc<IntakeRouting>,
    /// Every model profile the org's agents may name.
    pub profiles: BTreeSet<String>,
    /// The org's own model client, when it has providers or profiles of its own (and
    /// models were built); `None`: the deployment's.
    pub models: Option<Arc<dyn Models>>,
    /// The org's own content capture policy (its settings' `capture`), if it set one.
    pub capture: Option<CapturePolicy>,
    /// The org's own enabled MCP servers as the sidecar takes them (their headers only
    /// when built by the worker); the shared ones are not here.
    pub mcp_servers: Arc<Vec<pb::McpServerSpec>>,
}

impl std::fmt::Debug for OrgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgConfig")
            .field("version", &self.version)
            .field("agents", &self.agents.ids().collect::<Vec<_>>())
            .field("profiles", &self.profiles)
            .field("own_models", &self.models.is_some())
            .field("mcp_servers", &self.mcp_servers)
            .finish()
    }
}

/// The sealing context of a provider's API key: bound to the org and the provider, so a
/// sealed key copied to another row does not open.
pub fn provider_key_context(org_id: OrgId, provider: &str) -> String {
    format!("org:{org_id}:provider:{provider}:api_key")
}

/// Reads a provider item's spec (the JSON body without its `api_key`); an org's
/// provider may not read the deployment's environment or files.
pub fn parse_provider(json: &str) -> Result<ProviderSpec, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let spec: ProviderSpec =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| field_error(&error))?;
    if spec.api_key_env.is_some() {
        return Err("api_key_env: an org's provider takes its key as api_key".into());
    }
    if spec.api_key_file.is_some() {
        return Err("api_key_file: an org's provider takes its key as api_key".into());
    }
    if spec.kind != sable_llm::ProviderKind::Echo {
        let url = check_base_url(&spec.base_url);
        url.map_err(|message| format!("base_url: {message}"))?;
    }
    Ok(spec)
}

/// An `http(s)://host…` URL, checked without a URL crate (the runtime has none).
pub(crate) fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        return Err("must name a host".into());
    }
    Ok(())
}

/// Reads a model profile item's spec.
pub fn parse_profile(json: &str) -> Result<ProfileSpec, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let spec: ProfileSpec =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| field_error(&error))?;
    if spec.model.trim().is_empty() {
        return Err("model: must not be empty".into());
    }
    Ok(spec)
}

/// Reads the settings item's spec.
pub fn parse_settings(json: &str) -> Result<OrgSettingsSpec, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| field_error(&error))
}

impl OrgConfig {
    /// The deployment's files alone (an org that configured nothing).
    pub fn deployment(base: &OrgConfigBase) -> Self {
        Self {
            version: 0,
            agents: base.agents.clone(),
            routing: Arc::new(base.routing.clone()),
            profiles: base.models.profiles.keys().cloned().collect(),
            models: None,
            capture: None,
            mcp_servers: Arc::default(),
        }
    }

    /// Builds an org's configuration from its stored items over the deployment's files.
    /// `secrets` opens providers' keys (needed when one has a key and models are built)
    /// and MCP servers' headers (opened whenever `secrets` is given, and required when
    /// models are built); `build_models` builds the org's model client (the worker does;
    /// the gateway, which only validates and routes, does not).
    pub fn build(
        base: &OrgConfigBase,
        org_id: OrgId,
        snapshot: &OrgConfigSnapshot,
        secrets: Option<&SecretsKey>,
        build_models: bool,
    ) -> Result<Self, OrgConfigError> {
        let of = |kind: ConfigKind| snapshot.items.iter().filter(move |item| item.kind == kind);
        let mut catalog = base.models.clone();
        let mut keys = base.keys.clone();
        let mut own_models = false;
        for item in of(ConfigKind::Provider) {
            let spec = parse_provider(&item.spec)
                .map_err(|message| OrgConfigError::invalid(item.kind, &item.name, message))?;
            // The org's provider replaces the file's of that name, key included: the
            // deployment's key never goes to an address an org chose.
            keys.remove(&item.name);
            if build_models && let Some(sealed) = &item.secret_sealed {
                keys.insert(item.name.clone(), open_key(org_id, item, sealed, secrets)?);
            }
            catalog.providers.insert(item.name.clone(), spec);
            own_models = true;
        }
        for item in of(ConfigKind::ModelProfile) {
            let spec = parse_profile(&item.spec)
                .map_err(|message| OrgConfigError::invalid(item.kind, &item.name, message))?;
            catalog.profiles.insert(item.name.clone(), spec);
            own_models = true;
        }
        if own_models {
            validate_catalog(&catalog, snapshot)?;
        }
        let mut definitions: BTreeMap<String, _> = base
            .agents
            .ids()
            .filter_map(|id| base.agents.get(id).map(|agent| (id.to_owned(), agent)))
            .collect();
        for item in of(ConfigKind::Agent) {
            let invalid = |message: String| OrgConfigError::invalid(item.kind, &item.name, message);
            let id =
                AgentId::parse(item.name.clone()).map_err(|error| invalid(error.to_string()))?;
            let agent = AgentSpec::from_json(id, &item.spec).map_err(invalid)?;
            definitions.insert(item.name.clone(), Arc::new(agent));
        }
        let agents = AgentCatalog::from_shared(definitions.into_values());
        agents
            .check_profiles(|name| catalog.profiles.contains_key(name))
            .map_err(|error| match error {
                crate::AgentError::Invalid { path, message } => OrgConfigError::Invalid {
                    item: agent_of_path(&path),
                    message,
                },
                other => OrgConfigError::Invalid {
                    item: "agents".into(),
                    message: other.to_string(),
                },
            })?;
        let settings = of(ConfigKind::Settings)
            .next()
            .map(|item| {
                parse_settings(&item.spec)
                    .map_err(|message| OrgConfigError::invalid(item.kind, &item.name, message))
            })
            .transpose()?;
        let capture = settings.as_ref().and_then(|spec| spec.capture);
        let routing = routing(base, &agents, settings)?;
        // The worker sends the headers; a gateway with the secrets key opens them too, so
        // its `GET /v1/tools` asks the sidecar for the very connections turns use.
        let open_headers = build_models || secrets.is_some();
        let mcp_servers = build_servers(org_id, of(ConfigKind::McpServer), secrets, open_headers)?;
        let models = if own_models && build_models {
            let client =
                ModelClient::new(&catalog, &keys).map_err(|error| OrgConfigError::Invalid {
                    item: "model profiles".into(),
                    message: error.to_string(),
                })?;
            Some(Arc::new(client) as Arc<dyn Models>)
        } else {
            None
        };
        Ok(Self {
            version: snapshot.version,
            agents,
            routing: Arc::new(routing),
            profiles: catalog.profiles.keys().cloned().collect(),
            models,
            capture,
            mcp_servers: Arc::new(mcp_servers),
        })
    }
}

/// Names the org's item a catalog error is about (`profiles.x.provider: …`).
fn validate_catalog(
    catalog: &CatalogSpec,
    snapshot: &OrgConfigSnapshot,
) -> Result<(), OrgConfigError> {
    catalog.validate().map_err(|error| {
        let message = error.to_string();
        let profile = message
            .strip_prefix("profiles.")
            .and_then(|rest| rest.split('.').next())
            .unwrap_or_default();
        let own = snapshot
            .items
            .iter()
            .any(|item| item.kind == ConfigKind::ModelProfile && item.name == profile);
        let field = message
            .strip_prefix(&format!("profiles.{profile}."))
            .unwrap_or(&message);
        if own {
            OrgConfigError::invalid(ConfigKind::ModelProfile, profile, field)
        } else {
            OrgConfigError::Invalid {
                item: "model profiles".into(),
                message,
            }
        }
    })
}

fn agent_of_path(path: &std::path::Path) -> String {
    let id = path
        .parent()
        .and_then(|folder| folder.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("?");
    item_label(ConfigKind::Agent, id)
}

fn open_key(
    org_id: OrgId,
    item: &ConfigItem,
    sealed: &[u8],
    secrets: Option<&SecretsKey>,
) -> Result<Secret, OrgConfigError> {
    let invalid = |message: &str| OrgConfigError::invalid(item.kind, &item.name, message);
    let key = secrets.ok_or_else(|| {
        invalid("api_key: the deployment has no secrets key (SABLE_SECRETS_KEY) to open it")
    })?;
    key.open(sealed, &provider_key_context(org_id, &item.name))
        .map(Secret::new)
        .map_err(|error| invalid(&format!("api_key: {error}")))
}

fn routing(
    base: &OrgConfigBase,
    agents: &AgentCatalog,
    settings: Option<OrgSettingsSpec>,
) -> Result<IntakeRouting, OrgConfigError> {
    let ids: BTreeSet<String> = agents.ids().map(str::to_owned).collect();
    let Some(spec) = settings else {
        return Ok(IntakeRouting {
            agents: ids,
            ..base.routing.clone()
        });
    };
    let invalid = |message: String| OrgConfigError::invalid(ConfigKind::Settings, "", message);
    let default_agent = match spec.default_agent {
        Some(agent) if !ids.contains(&agent) => {
            return Err(invalid(format!("default_agent: no agent named '{agent}'")));
        }
        Some(agent) => AgentId::parse(agent).map_err(|error| invalid(error.to_string()))?,
        None => base.routing.default_agent.clone(),
    };
    if let Some((index, rule)) = spec
        .bindings
        .iter()
        .enumerate()
        .find(|(_, rule)| !ids.contains(&rule.agent))
    {
        return Err(invalid(format!(
            "bindings[{index}].agent: no agent named '{}'",
            rule.agent
        )));
    }
    let rules = spec
        .bindings
        .into_iter()
        .chain(base.routing.bindings.rules().iter().cloned())
        .collect();
    Ok(IntakeRouting {
        default_agent,
        agents: ids,
        bindings: Bindings::new(rules),
    })
}

/// Built configurations by org, keyed by version; cheap to clone.
#[derive(Clone)]
pub struct OrgConfigs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    base: OrgConfigBase,
    deployment: Arc<OrgConfig>,
    secrets: Option<SecretsKey>,
    build_models: bool,
    refresh: Duration,
    /// The deployment's change count, when this process polls it ([`OrgConfigs::follow`]).
    feed: OnceLock<Arc<ChangeFeed>>,
    cache: RwLock<HashMap<OrgId, Cached>>,
}

struct Cached {
    config: Arc<OrgConfig>,
    /// When the read that last found this version current began.
    checked: Instant,
}

impl std::fmt::Debug for OrgConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgConfigs")
            .field("refresh", &self.inner.refresh)
            .finish_non_exhaustive()
    }
}

impl OrgConfigs {
    pub fn new(
        store: Store,
        base: OrgConfigBase,
        secrets: Option<SecretsKey>,
        build_models: bool,
        refresh: Duration,
    ) -> Self {
        let deployment = Arc::new(OrgConfig::deployment(&base));
        Self {
            inner: Arc::new(Inner {
                store,
                base,
                deployment,
                secrets,
                build_models,
                refresh,
                feed: OnceLock::new(),
                cache: RwLock::default(),
            }),
        }
    }

    /// Lets `current` keep a checked version for as long as `feed` confirms it, instead
    /// of reading the version again every `refresh`; a change the feed sees makes every
    /// version checked before it stale at once. The first feed given is the one kept.
    pub fn follow(&self, feed: Arc<ChangeFeed>) {
        let _ = self.inner.feed.set(feed);
    }

    /// The deployment's files alone.
    pub fn deployment(&self) -> Arc<OrgConfig> {
        self.inner.deployment.clone()
    }

    pub fn base(&self) -> &OrgConfigBase {
        &self.inner.base
    }

    pub fn secrets(&self) -> Option<&SecretsKey> {
        self.inner.secrets.as_ref()
    }

    /// The org's configuration at `version` or newer: what a turn that began at
    /// `version` runs with. Reads the store only when the cache holds an older one.
    pub async fn at_version(
        &self,
        org_id: OrgId,
        version: i64,
    ) -> Result<Arc<OrgConfig>, OrgConfigError> {
        if version == 0 {
            return Ok(self.deployment());
        }
        if let Some(config) = self.cached(org_id, |cached| cached.config.version >= version) {
            return Ok(config);
        }
        self.load(org_id).await
    }

    /// The org's configuration as of at most `refresh` ago, or as long as the change feed
    /// confirms it (intake: the gateway, cron).
    pub async fn current(&self, org_id: OrgId) -> Result<Arc<OrgConfig>, OrgConfigError> {
        if let Some(config) = self.cached(org_id, |cached| self.still_holds(cached.checked)) {
            return Ok(config);
        }
        let read_at = Instant::now();
        let version = self.inner.store.org_config_version(org_id).await?;
        if let Some(config) = self.cached(org_id, |cached| cached.config.version == version) {
            self.touch(org_id, read_at);
            return Ok(config);
        }
        if version == 0 {
            return Ok(self.remember(org_id, self.deployment(), read_at));
        }
        self.load(org_id).await
    }

    /// Whether a version checked by a read begun at `checked` may be used without reading
    /// it again.
    fn still_holds(&self, checked: Instant) -> bool {
        let refresh = self.inner.refresh;
        self.inner
            .feed
            .get()
            .map_or(checked.elapsed() < refresh, |feed| {
                feed.holds(checked, refresh)
            })
    }

    /// Notes that the org's version is `version` as of a read begun at `read_at` (of
    /// something else, such as the caller's key), so `current` need not read it again: a
    /// cached configuration of that version counts as checked then, an older one is
    /// dropped.
    pub fn saw_version(&self, org_id: OrgId, version: i64, read_at: Instant) {
        let current = self.cached(org_id, |cached| cached.config.version == version);
        if current.is_some() {
            self.touch(org_id, read_at);
        } else if version == 0 {
            self.remember(org_id, self.deployment(), read_at);
        } else {
            let mut cache = self.inner.cache.write().expect("org config cache lock");
            if cache
                .get(&org_id)
                .is_some_and(|cached| cached.config.version < version)
            {
                cache.remove(&org_id);
            }
        }
    }

    /// The org's own capture policy as cached (at the version of the org's latest turn
    /// on this process, or newer); `None` when it set none or nothing is cached.
    pub fn capture_of(&self, org_id: OrgId) -> Option<CapturePolicy> {
        self.cached(org_id, |_| true)
            .and_then(|config| config.capture)
    }

    /// Drops what is cached of the org (after this process changed it).
    pub fn forget(&self, org_id: OrgId) {
        self.inner
            .cache
            .write()
            .expect("org config cache lock")
            .remove(&org_id);
    }

    /// Builds `snapshot` as the org's configuration without caching it: a change's
    /// validation before it is stored.
    pub fn check(
        &self,
        org_id: OrgId,
        snapshot: &OrgConfigSnapshot,
    ) -> Result<OrgConfig, OrgConfigError> {
        OrgConfig::build(&self.inner.base, org_id, snapshot, None, false)
    }

    async fn load(&self, org_id: OrgId) -> Result<Arc<OrgConfig>, OrgConfigError> {
        let read_at = Instant::now();
        let snapshot = self.inner.store.org_config(org_id).await?;
        let started = Instant::now();
        let config = Arc::new(OrgConfig::build(
            &self.inner.base,
            org_id,
            &snapshot,
            self.inner.secrets.as_ref(),
            self.inner.build_models,
        )?);
        metrics::histogram!("sable_org_config_build_seconds").record(started.elapsed());
        Ok(self.remember(org_id, config, read_at))
    }

    fn cached(&self, org_id: OrgId, fresh: impl Fn(&Cached) -> bool) -> Option<Arc<OrgConfig>> {
        let cache = self.inner.cache.read().expect("org config cache lock");
        cache
            .get(&org_id)
            .filter(|cached| fresh(cached))
            .map(|cached| cached.config.clone())
    }

    fn touch(&self, org_id: OrgId, read_at: Instant) {
        if let Some(cached) = self
            .inner
            .cache
            .write()
            .expect("org config cache lock")
            .get_mut(&org_id)
        {
            cached.checked = cached.checked.max(read_at);
        }
    }

    /// Keeps `config`, read by a read begun at `read_at`, unless a newer one is already
    /// cached; returns the one kept.
    fn remember(&self, org_id: OrgId, config: Arc<OrgConfig>, read_at: Instant) -> Arc<OrgConfig> {
        let mut cache = self.inner.cache.write().expect("org config cache lock");
        let entry = cache.entry(org_id).or_insert_with(|| Cached {
            config: config.clone(),
            checked: read_at,
        });
        if entry.config.version <= config.version {
            entry.config = config;
            entry.checked = entry.checked.max(read_at);
        }
        entry.config.clone()
    }
}
