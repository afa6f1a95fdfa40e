//! The Feishu / Lark channel: apps per org (admin routes), webhook and long-connection
//! ingress that turn `im.message.receive_v1` into queued turns and card presses into
//! approval decisions, replies sent by the dispatcher, streamed reply cards and approval
//! cards.

mod actions;
mod api;
pub(crate) mod apps;
mod cards;
mod crypto;
pub(crate) mod ingress;
pub(crate) mod long_connection;
mod pbbp2;
pub(crate) mod reply;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use sable_runtime::AgentCatalog;
use sable_store::{FeishuApp, FeishuSecrets, SecretsKey};

pub(crate) use api::FeishuApi;

/// The default open platform (Feishu, China); Lark is `https://open.larksuite.com`.
pub const DEFAULT_BASE_URL: &str = "https://open.feishu.cn";

/// What the Feishu channel needs from the deployment.
#[derive(Debug, Clone)]
pub struct FeishuConfig {
    /// Seals and opens app secrets; `None` refuses the Feishu routes with 503.
    pub secrets_key: Option<SecretsKey>,
    /// The client for the open platform (built once by the binary).
    pub client: reqwest::Client,
    /// The first wait after a rate-limit answer without a reset header (then x3).
    pub rate_limit_backoff: Duration,
    /// Rate-limit answers retried within one delivery attempt.
    pub max_rate_limit_retries: u32,
    /// How often the apps are reread, so `long-connection` apps added or removed later
    /// connect or disconnect.
    pub apps_refresh: Duration,
    /// A streamed reply card is updated at most once per this interval.
    pub stream_interval: Duration,
}

/// The Feishu half of the gateway's shared state.
#[derive(Debug, Clone)]
pub(crate) struct FeishuState {
    pub secrets_key: Option<SecretsKey>,
    pub api: Arc<FeishuApi>,
    pub stream_interval: Duration,
}

impl FeishuState {
    pub(crate) fn new(config: &FeishuConfig) -> Self {
        Self {
            secrets_key: config.secrets_key.clone(),
            api: Arc::new(FeishuApi::new(
                config.client.clone(),
                config.rate_limit_backoff,
                config.max_rate_limit_retries,
            )),
            stream_interval: config.stream_interval,
        }
    }
}

/// An app as an admin describes it (the API's body, the CLI's flags and variables).
#[derive(Debug, Clone)]
pub struct FeishuAppInput {
    pub org_id: sable_core::OrgId,
    pub app_id: String,
    pub mode: String,
    pub base_url: Option<String>,
    pub agent: Option<String>,
    pub require_mention: Option<bool>,
    /// Replies stream into a card (default on).
    pub stream_replies: Option<bool>,
    pub secrets: FeishuSecrets,
}

/// The path Feishu's console is given as the app's request URL (after the gateway's
/// public origin).
pub fn webhook_path(app_id: &str) -> String {
    format!("/v1/channels/feishu/{app_id}/events")
}

/// The path that may be given as the app's card callback URL (the request URL works
/// too: both take events and card actions).
pub fn card_callback_path(app_id: &str) -> String {
    format!("/v1/channels/feishu/{app_id}/card")
}

/// Validates an app and seals its secrets; the error says which field is wrong.
pub fn build_app(
    input: FeishuAppInput,
    key: &SecretsKey,
    agents: &AgentCatalog,
) -> Result<FeishuApp, String> {
    let app_id = input.app_id.trim().to_owned();
    let id_ok = !app_id.is_empty()
        && app_id.len() <= 64
        && app_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte));
    if !id_ok {
        return Err("app_id: must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'".into());
    }
    if !matches!(input.mode.as_str(), "webhook" | "long-connection") {
        return Err(format!(
            "mode: expected \"webhook\" or \"long-connection\", got \"{}\"",
            input.mode
        ));
    }
    let base_url = input
        .base_url
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let url_ok = reqwest::Url::parse(&base_url)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some());
    if !url_ok {
        return Err("base_url: must be an http:// or https:// URL".into());
    }
    if let Some(agent) = &input.agent
        && !agents.contains(agent)
    {
        return Err(format!("agent: unknown agent '{agent}'"));
    }
    let secret_ok = |value: &str| !value.is_empty() && value.len() <= 1024;
    if !secret_ok(&input.secrets.app_secret) {
        return Err("app_secret: must be 1 to 1024 bytes".into());
    }
    if !secret_ok(&input.secrets.verification_token) {
        return Err("verification_token: must be 1 to 1024 bytes".into());
    }
    let mut secrets = input.secrets;
    secrets.encrypt_key = secrets.encrypt_key.filter(|value| !value.is_empty());
    if secrets
        .encrypt_key
        .as_deref()
        .is_some_and(|value| !secret_ok(value))
    {
        return Err("encrypt_key: must be at most 1024 bytes".into());
    }
    Ok(FeishuApp {
        org_id: input.org_id,
        secrets: secrets.seal(key, &app_id),
        app_id,
        mode: input.mode,
        base_url,
        agent: input.agent,
        require_mention: input.require_mention.unwrap_or(true),
        stream_replies: input.stream_replies.unwrap_or(true),
        created_at: chrono::Utc::now(),
    })
}
