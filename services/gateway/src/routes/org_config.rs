//! The caller's org's own configuration, layered over the deployment's files:
//! `/v1/agents/{agent_id}`, `/v1/model-profiles[/{name}]`, `/v1/providers[/{name}]` and
//! `/v1/org-settings`. Reads need `viewer` (providers: `admin`), changes `admin`. The
//! org's MCP servers (`mcp_servers.rs`) are stored and checked through the same `put` and
//! `delete`.
//!
//! A change is built together with the org's other items before it is stored (an agent
//! naming a profile nobody defines is refused, naming the item and field), stored with
//! its audit event, and seen by the next turn: workers cache each org's configuration by
//! its version. A provider's `api_key` is write-only: sealed with `SABLE_SECRETS_KEY`,
//! never answered, logged or audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_core::{AgentId, OrgId};
use sable_runtime::{AgentSpec, OrgConfigError, SETTINGS_ITEM};
use sable_store::{ConfigItem, ConfigKind, OrgConfigSnapshot, PutConfigItem};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// The longest item name (agent id, profile or provider name).
const MAX_NAME_CHARS: usize = 64;
/// The longest provider API key accepted.
const MAX_API_KEY_BYTES: usize = 4096;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_agent, put_agent, delete_agent))
        .routes(routes!(list_profiles))
        .routes(routes!(put_profile, delete_profile))
        .routes(routes!(list_providers))
        .routes(routes!(put_provider, delete_provider))
        .routes(routes!(get_settings, put_settings))
}

/// Where an agent, profile or provider comes from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// The deployment's files: every org's default.
    Deployment,
    /// The org's own (replacing the deployment's of the same name, if any).
    Org,
}

/// An agent of the org, with its spec.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentConfigView {
    id: String,
    source: Source,
    /// As `PUT` takes it (with the defaults filled in); for the deployment's agents, the
    /// equivalent of their folder (the prompt from `AGENT.md`).
    #[schema(value_type = Object)]
    spec: Value,
    /// When the org's item was last changed (absent for the deployment's).
    updated_at: Option<DateTime<Utc>>,
    /// The org's configuration version after this change or as read.
    version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileList {
    profiles: Vec<ProfileView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileView {
    name: String,
    source: Source,
    provider: String,
    model: String,
    context_window: u32,
    max_output_tokens: Option<u32>,
    fallbacks: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderList {
    providers: Vec<ProviderView>,
}

/// A provider without its key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderView {
    name: String,
    source: Source,
    /// `openai`, `anthropic` or `echo`.
    kind: String,
    base_url: String,
    /// The names of the extra headers it sends (never their values).
    header_names: Vec<String>,
    /// Whether an API key is set (the org's sealed one, or the deployment's).
    api_key_set: bool,
}

/// What a change did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigChange {
    /// `agent`, `model_profile`, `provider`, `mcp_server` or `settings`.
    kind: &'static str,
    name: String,
    /// False when an item of the org was replaced.
    created: bool,
    /// The org's configuration version after the change.
    version: i64,
}

/// The org's settings.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SettingsView {
    /// The agent of messages that name none and no binding matches.
    default_agent: String,
    /// The org's binding rules (tried before the deployment's).
    #[schema(value_type = Vec<Object>)]
    bindings: Value,
    /// The org's own content capture policy for its turns' spans (`off`, `redacted`,
    /// `full`); `null`: the deployment's. An operator's `capture_content_orgs` entry for
    /// the org decides over it.
    capture: Option<&'static str>,
    version: i64,
}

/// One of the org's agents (its own or the deployment's).
#[utoipa::path(
    get,
    path = "/v1/agents/{agent_id}",
    tag = "agents",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The agent", body = AgentConfigView),
        (status = 404, description = "The org has no agent of this id", body = ErrorBody),
    ),
)]
async fn get_agent(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(agent_id): Path<String>,
) -> Result<Json<AgentConfigView>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    if let Some(item) = find(&snapshot, ConfigKind::Agent, &agent_id) {
        return Ok(Json(AgentConfigView {
            id: agent_id,
            source: Source::Org,
            spec: stored_spec(item)?,
            updated_at: Some(item.updated_at),
            version: snapshot.version,
        }));
    }
    let agent = state
        .orgs()
        .base()
        .agents
        .get(&agent_id)
        .ok_or(ApiError::NotFound("agent"))?;
    Ok(Json(AgentConfigView {
        id: agent_id,
        source: Source::Deployment,
        spec: serde_json::to_value(AgentSpec::from(&*agent))
            .map_err(|error| ApiError::Internal(error.into()))?,
        updated_at: None,
        version: snapshot.version,
    }))
}

/// Creates or replaces one of the org's agents (an id the deployment also defines is
/// replaced for this org only). Body: `prompt` (required), `name`, `description`,
/// `model {profile, max_output_tokens, temperature, routes}`, `limits {history_messages,
/// max_tool_rounds, max_tool_result_chars}`, `tools {allow, require_approval}`, `skills
/// {allow, allow_scripts}`.
#[utoipa::path(
    put,
    path = "/v1/agents/{agent_id}",
    tag = "agents",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id")),
    request_body(content = Object, description = "The agent's spec"),
    responses(
        (status = 200, description = "Replaced", body = ConfigChange),
        (status = 201, description = "Created", body = ConfigChange),
        (status = 422, description = "The spec is invalid; the message names the field", body = ErrorBody),
    ),
)]
async fn put_agent(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(agent_id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    let id = AgentId::parse(agent_id.clone())
        .map_err(|error| ApiError::Validation(format!("agent_id: {error}")))?;
    let text = object_text(&body)?;
    let spec = AgentSpec::parse_json(&text).map_err(ApiError::Validation)?;
    let prompt = spec.prompt.clone().unwrap_or_default();
    spec.clone()
        .into_definition(id, &prompt)
        .map_err(ApiError::Validation)?;
    let normalized =
        serde_json::to_string(&spec).map_err(|error| ApiError::Internal(error.into()))?;
    put(
        &state,
        &caller,
        ConfigKind::Agent,
        &agent_id,
        normalized,
        None,
    )
    .await
}

/// Deletes one of the org's agents (the deployment's of that id, if any, answers again).
#[utoipa::path(
    delete,
    path = "/v1/agents/{agent_id}",
    tag = "agents",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The org has no agent of its own with this id", body = ErrorBody),
        (status = 422, description = "Something of the org still names it", body = ErrorBody),
    ),
)]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(agent_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ConfigKind::Agent, &agent_id).await
}

/// The model profiles the org's agents may name: the deployment's and the org's own.
#[utoipa::path(
    get,
    path = "/v1/model-profiles",
    tag = "agents",
    security(("api_key" = [])),
    responses((status = 200, description = "The profiles", body = ProfileList)),
)]
async fn list_profiles(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<ProfileList>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    let mut profiles: std::collections::BTreeMap<String, ProfileView> = state
        .orgs()
        .base()
        .models
        .profiles
        .iter()
        .map(|(name, spec)| (name.clone(), profile_view(name, Source::Deployment, spec)))
        .collect();
    for item in items(&snapshot, ConfigKind::ModelProfile) {
        let spec = sable_runtime::parse_profile(&item.spec).map_err(ApiError::OrgConfig)?;
        profiles.insert(
            item.name.clone(),
            profile_view(&item.name, Source::Org, &spec),
        );
    }
    Ok(Json(ProfileList {
        profiles: profiles.into_values().collect(),
    }))
}

/// Creates or replaces one of the org's model profiles. Body: `provider`, `model`,
/// `context_window`, `max_output_tokens`, `fallbacks`.
#[utoipa::path(
    put,
    path = "/v1/model-profiles/{name}",
    tag = "agents",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The profile's name")),
    request_body(content = Object, description = "The profile"),
    responses(
        (status = 200, description = "Replaced", body = ConfigChange),
        (status = 201, description = "Created", body = ConfigChange),
        (status = 422, description = "The profile is invalid; the message names the field", body = ErrorBody),
    ),
)]
async fn put_profile(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    check_name("name", &name)?;
    let text = object_text(&body)?;
    sable_runtime::parse_profile(&text).map_err(ApiError::Validation)?;
    put(&state, &caller, ConfigKind::ModelProfile, &name, text, None).await
}

/// Deletes one of the org's model profiles.
#[utoipa::path(
    delete,
    path = "/v1/model-profiles/{name}",
    tag = "agents",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The profile's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The org has no profile of its own with this name", body = ErrorBody),
        (status = 422, description = "An agent of the org still names it", body = ErrorBody),
    ),
)]
async fn delete_profile(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ConfigKind::ModelProfile, &name).await
}

/// The providers the org's profiles reach: the deployment's and the org's own, without
/// their keys.
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "agents",
    security(("api_key" = [])),
    responses((status = 200, description = "The providers", body = ProviderList)),
)]
async fn list_providers(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<ProviderList>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    let base = state.orgs().base();
    let mut providers: std::collections::BTreeMap<String, ProviderView> = base
        .models
        .providers
        .iter()
        .map(|(name, spec)| {
            let key_set = spec.api_key_env.is_some() || spec.api_key_file.is_some();
            (
                name.clone(),
                provider_view(name, Source::Deployment, spec, key_set),
            )
        })
        .collect();
    for item in items(&snapshot, ConfigKind::Provider) {
        let spec = sable_runtime::parse_provider(&item.spec).map_err(ApiError::OrgConfig)?;
        providers.insert(
            item.name.clone(),
            provider_view(&item.name, Source::Org, &spec, item.secret_sealed.is_some()),
        );
    }
    Ok(Json(ProviderList {
        providers: providers.into_values().collect(),
    }))
}

/// Creates or replaces one of the org's providers; one named like a deployment's
/// replaces it for this org (its turns then never use the deployment's key). Body:
/// `kind`, `base_url`, `headers`, timeouts (`connect_timeout_ms`, …) and `api_key`
/// (write-only; omitted on a replace: the stored key is kept).
#[utoipa::path(
    put,
    path = "/v1/providers/{name}",
    tag = "agents",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The provider's name")),
    request_body(content = Object, description = "The provider and its key"),
    responses(
        (status = 200, description = "Replaced", body = ConfigChange),
        (status = 201, description = "Created", body = ConfigChange),
        (status = 422, description = "The provider is invalid; the message names the field", body = ErrorBody),
        (status = 503, description = "An api_key was given but the deployment has no SABLE_SECRETS_KEY", body = ErrorBody),
    ),
)]
async fn put_provider(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    check_name("name", &name)?;
    let api_key = match body.as_object_mut().and_then(|body| body.remove("api_key")) {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if !key.trim().is_empty() && key.len() <= MAX_API_KEY_BYTES => {
            Some(key)
        }
        Some(_) => {
            return Err(ApiError::Validation(format!(
                "api_key: a non-empty string of at most {MAX_API_KEY_BYTES} bytes"
            )));
        }
    };
    let text = object_text(&body)?;
    sable_runtime::parse_provider(&text).map_err(ApiError::Validation)?;
    let sealed = match api_key {
        Some(key) => {
            let secrets = state
                .orgs()
                .secrets()
                .ok_or(ApiError::Unavailable("the secrets key (SABLE_SECRETS_KEY)"))?;
            let context = sable_runtime::provider_key_context(caller.org_id, &name);
            Some(secrets.seal_enveloped(key.trim(), &context))
        }
        None => None,
    };
    put(&state, &caller, ConfigKind::Provider, &name, text, sealed).await
}

/// Deletes one of the org's providers.
#[utoipa::path(
    delete,
    path = "/v1/providers/{name}",
    tag = "agents",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The org has no provider of its own with this name", body = ErrorBody),
        (status = 422, description = "A profile still names it", body = ErrorBody),
    ),
)]
async fn delete_provider(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ConfigKind::Provider, &name).await
}

/// The org's settings: its default agent, binding rules and content capture policy.
#[utoipa::path(
    get,
    path = "/v1/org-settings",
    tag = "agents",
    security(("api_key" = [])),
    responses((status = 200, description = "The settings", body = SettingsView)),
)]
async fn get_settings(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SettingsView>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    settings_view(&state, caller.org_id, &snapshot)
}

/// Replaces the org's settings. Body: `default_agent` (an agent of the org; omitted:
/// the deployment's), `bindings` (`[{agent, channel?, conversation?, user?}]`, tried
/// before the deployment's) and `capture` (`off`, `redacted` or `full`: whether the
/// org's prompts, replies and tool payloads enter its turns' spans; omitted: the
/// deployment's policy).
#[utoipa::path(
    put,
    path = "/v1/org-settings",
    tag = "agents",
    security(("api_key" = [])),
    request_body(content = Object, description = "The settings"),
    responses(
        (status = 200, description = "Replaced", body = ConfigChange),
        (status = 201, description = "Set for the first time", body = ConfigChange),
        (status = 422, description = "The settings are invalid; the message names the field", body = ErrorBody),
    ),
)]
async fn put_settings(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    let text = object_text(&body)?;
    sable_runtime::parse_settings(&text).map_err(ApiError::Validation)?;
    put(
        &state,
        &caller,
        ConfigKind::Settings,
        SETTINGS_ITEM,
        text,
        None,
    )
    .await
}

/// Builds the org's configuration with the item replaced, then stores it.
pub(crate) async fn put(
    state: &AppState,
    caller: &Authenticated,
    kind: ConfigKind,
    name: &str,
    spec: String,
    secret_sealed: Option<Vec<u8>>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    let org_id = caller.org_id;
    let mut candidate = state.store.org_config(org_id).await?;
    candidate
        .items
        .retain(|item| !(item.kind == kind && item.name == name));
    let now = Utc::now();
    candidate.items.push(ConfigItem {
        kind,
        name: name.to_owned(),
        spec: spec.clone(),
        secret_sealed: None,
        created_at: now,
        updated_at: now,
    });
    check(state, org_id, &candidate)?;
    let write = state
        .store
        .put_config_item(
            &PutConfigItem {
                org_id,
                kind,
                name,
                spec: &spec,
                secret_sealed,
            },
            &caller.actor,
        )
        .await?;
    state.orgs().forget(org_id);
    let status = if write.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ConfigChange {
            kind: kind.as_str(),
            name: name.to_owned(),
            created: write.created,
            version: write.version,
        }),
    ))
}

/// Builds the org's configuration without the item, then deletes it.
pub(crate) async fn delete(
    state: &AppState,
    caller: &Authenticated,
    kind: ConfigKind,
    name: &str,
) -> Result<StatusCode, ApiError> {
    let org_id = caller.org_id;
    let mut candidate = state.store.org_config(org_id).await?;
    let before = candidate.items.len();
    candidate
        .items
        .retain(|item| !(item.kind == kind && item.name == name));
    if candidate.items.len() == before {
        return Err(ApiError::NotFound(not_found_label(kind)));
    }
    check(state, org_id, &candidate)?;
    state
        .store
        .delete_config_item(org_id, kind, name, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound(not_found_label(kind)))?;
    state.orgs().forget(org_id);
    Ok(StatusCode::NO_CONTENT)
}

fn check(state: &AppState, org_id: OrgId, candidate: &OrgConfigSnapshot) -> Result<(), ApiError> {
    match state.orgs().check(org_id, candidate) {
        Ok(_) => Ok(()),
        Err(OrgConfigError::Invalid { item, message }) => {
            Err(ApiError::Validation(format!("{item}: {message}")))
        }
        Err(OrgConfigError::Store(error)) => Err(error.into()),
    }
}

fn not_found_label(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Agent => "org agent",
        ConfigKind::ModelProfile => "org model profile",
        ConfigKind::Provider => "org provider",
        ConfigKind::Settings => "org settings",
        ConfigKind::McpServer => "org MCP server",
    }
}

fn settings_view(
    state: &AppState,
    org_id: OrgId,
    snapshot: &OrgConfigSnapshot,
) -> Result<Json<SettingsView>, ApiError> {
    let built = state.orgs().check(org_id, snapshot)?;
    let bindings = match find(snapshot, ConfigKind::Settings, SETTINGS_ITEM) {
        Some(item) => stored_spec(item)?
            .get("bindings")
            .cloned()
            .unwrap_or_else(|| Value::Array(Vec::new())),
        None => Value::Array(Vec::new()),
    };
    Ok(Json(SettingsView {
        default_agent: built.routing.default_agent.to_string(),
        bindings,
        capture: built.capture.map(sable_telemetry::CapturePolicy::as_str),
        version: snapshot.version,
    }))
}

pub(crate) fn items(
    snapshot: &OrgConfigSnapshot,
    kind: ConfigKind,
) -> impl Iterator<Item = &ConfigItem> {
    snapshot.items.iter().filter(move |item| item.kind == kind)
}

pub(crate) fn find<'a>(
    snapshot: &'a OrgConfigSnapshot,
    kind: ConfigKind,
    name: &str,
) -> Option<&'a ConfigItem> {
    items(snapshot, kind).find(|item| item.name == name)
}

fn stored_spec(item: &ConfigItem) -> Result<Value, ApiError> {
    serde_json::from_str(&item.spec).map_err(|error| ApiError::Internal(error.into()))
}

/// The body as JSON text, when it is an object.
pub(crate) fn object_text(body: &Value) -> Result<String, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Validation(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::to_string(body).map_err(|error| ApiError::Internal(error.into()))
}

/// 1 to 64 of `[A-Za-z0-9_.-]`.
fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::Validation(format!(
            "{field}: 1 to {MAX_NAME_CHARS} letters, digits, '_', '-' or '.'"
        )))
    }
}

fn profile_view(name: &str, source: Source, spec: &sable_llm::ProfileSpec) -> ProfileView {
    ProfileView {
        name: name.to_owned(),
        source,
        provider: spec.provider.clone(),
        model: spec.model.clone(),
        context_window: spec.context_window,
        max_output_tokens: spec.max_output_tokens,
        fallbacks: spec.fallbacks.clone(),
    }
}

fn provider_view(
    name: &str,
    source: Source,
    spec: &sable_llm::ProviderSpec,
    api_key_set: bool,
) -> ProviderView {
    ProviderView {
        name: name.to_owned(),
        source,
        kind: format!("{:?}", spec.kind).to_lowercase(),
        base_url: spec.base_url.clone(),
        header_names: spec.headers.keys().cloned().collect(),
        api_key_set,
    }
}
