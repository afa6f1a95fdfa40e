//! A client of the Feishu / Lark open platform: `tenant_access_token` cached per app
//! (refreshed before expiry and on the token-invalid codes), the bot's own identity, and
//! replies and card updates. Rate-limit answers back off and retry; nothing here logs a secret or a token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Tokens are refreshed this long before Feishu says they expire (the Go SDK's margin).
const EXPIRY_MARGIN: Duration = Duration::from_secs(180);
/// Codes meaning "this token is not (or no longer) valid": refresh and retry once.
const TOKEN_CODES: [i64; 4] = [99991661, 99991663, 99991664, 99991671];
/// Codes meaning "too many requests": back off and retry.
const RATE_LIMIT_CODES: [i64; 2] = [99991400, 230020];
/// A rate-limit reset longer than this is not waited for inside one delivery attempt.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Which app a call is made as.
pub(crate) struct Credentials<'a> {
    pub base_url: &'a str,
    pub app_id: &'a str,
    pub app_secret: &'a str,
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// How an API call failed.
#[derive(Debug)]
enum Failure {
    Token,
    RateLimited(Option<Duration>),
    Other(String),
}

/// Shared by every request handler and the dispatcher of one gateway.
#[derive(Debug)]
pub(crate) struct FeishuApi {
    client: reqwest::Client,
    backoff: Duration,
    max_rate_limit_retries: u32,
    // Held across a refresh: one token request per app at a time (single flight).
    tokens: tokio::sync::Mutex<HashMap<String, CachedTokenSlot>>,
    bots: std::sync::Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct CachedTokenSlot(Option<CachedToken>);

impl std::fmt::Debug for CachedTokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedToken(***)")
    }
}

impl FeishuApi {
    pub(crate) fn new(
        client: reqwest::Client,
        backoff: Duration,
        max_rate_limit_retries: u32,
    ) -> Self {
        Self {
            client,
            backoff,
            max_rate_limit_retries,
            tokens: tokio::sync::Mutex::default(),
            bots: std::sync::Mutex::default(),
        }
    }

    /// The app's tenant token, from the cache or freshly fetched.
    async fn token(&self, app: &Credentials<'_>) -> Result<String, String> {
        let mut tokens = self.tokens.lock().await;
        let slot = tokens.entry(app.app_id.to_owned()).or_default();
        if let Some(cached) = &slot.0
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let url = format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            app.base_url.trim_end_matches('/')
        );
        let response = self
            .client
            .post(url)
            .json(&json!({"app_id": app.app_id, "app_secret": app.app_secret}))
            .send()
            .await
            .map_err(|error| {
                format!("feishu token endpoint unreachable: {}", error.without_url())
            })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|error| {
            format!("feishu token endpoint answered {status} without JSON: {error}")
        })?;
        let code = body["code"].as_i64().unwrap_or(-1);
        let (Some(token), Some(expire)) = (
            body["tenant_access_token"].as_str(),
            body["expire"].as_u64(),
        ) else {
            return Err(format!(
                "feishu refused the app's credentials (code {code}: {})",
                body["msg"].as_str().unwrap_or("")
            ));
        };
        if code != 0 {
            return Err(format!("feishu token endpoint answered code {code}"));
        }
        let lifetime = Duration::from_secs(expire).saturating_sub(EXPIRY_MARGIN);
        slot.0 = Some(CachedToken {
            token: token.to_owned(),
            refresh_at: Instant::now() + lifetime,
        });
        Ok(token.to_owned())
    }

    /// Forgets the app's token if it is still `token` (another call may have refreshed it).
    async fn evict(&self, app_id: &str, token: &str) {
        let mut tokens = self.tokens.lock().await;
        if let Some(slot) = tokens.get_mut(app_id)
            && slot.0.as_ref().is_some_and(|cached| cached.token == token)
        {
            slot.0 = None;
        }
    }

    /// Calls an OpenAPI route as the app and returns the whole answer on `code == 0`.
    async fn call(
        &self,
        app: &Credentials<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", app.base_url.trim_end_matches('/'));
        let mut token_retried = false;
        let mut rate_limited = 0;
        loop {
            let token = self.token(app).await?;
            let mut request = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(&token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let failure = match request.send().await {
                Ok(response) => match classify(response).await {
                    Ok(answer) => return Ok(answer),
                    Err(failure) => failure,
                },
                Err(error) => {
                    Failure::Other(format!("feishu unreachable: {}", error.without_url()))
                }
            };
            match failure {
                Failure::Token if !token_retried => {
                    tracing::info!(app_id = app.app_id, "feishu token refused; refreshing");
                    self.evict(app.app_id, &token).await;
                    token_retried = true;
                }
                Failure::Token => return Err("feishu refused a fresh tenant_access_token".into()),
                Failure::RateLimited(reset) if rate_limited < self.max_rate_limit_retries => {
                    let wait = reset
                        .unwrap_or_else(|| self.backoff * 3u32.pow(rate_limited))
                        .min(MAX_WAIT);
                    tracing::info!(
                        app_id = app.app_id,
                        wait_ms = wait.as_millis() as u64,
                        "feishu rate limit; backing off"
                    );
                    rate_limited += 1;
                    tokio::time::sleep(wait).await;
                }
                Failure::RateLimited(_) => {
                    return Err("feishu rate limit persisted; retrying later".into());
                }
                Failure::Other(reason) => return Err(reason),
            }
        }
    }

    /// The bot's own `open_id` (for the mention rule), cached per app.
    pub(crate) async fn bot_open_id(&self, app: &Credentials<'_>) -> Result<String, String> {
        if let Some(open_id) = self.bots.lock().expect("bot cache").get(app.app_id) {
            return Ok(open_id.clone());
        }
        let answer = self
            .call(app, Method::GET, "/open-apis/bot/v3/info", None)
            .await?;
        let open_id = answer["bot"]["open_id"]
            .as_str()
            .ok_or("feishu bot info has no open_id")?
            .to_owned();
        self.bots
            .lock()
            .expect("bot cache")
            .insert(app.app_id.to_owned(), open_id.clone());
        Ok(open_id)
    }

    /// Replies to `message_id` and returns the new message's id; `uuid` makes a repeat
    /// of the same reply a no-op at Feishu (the repeat answers with the first message).
    pub(crate) async fn reply(
        &self,
        app: &Credentials<'_>,
        message_id: &str,
        msg_type: &str,
        content: &Value,
        uuid: &str,
    ) -> Result<String, String> {
        let body = json!({
            "msg_type": msg_type,
            "content": content.to_string(),
            "uuid": uuid,
        });
        let path = format!("/open-apis/im/v1/messages/{message_id}/reply");
        let answer = self.call(app, Method::POST, &path, Some(&body)).await?;
        Ok(answer["data"]["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Replaces the content of an interactive card the app sent (`PATCH`, a shared card:
    /// `update_multi` in both the old and the new card).
    pub(crate) async fn patch_card(
        &self,
        app: &Credentials<'_>,
        message_id: &str,
        card: &Value,
    ) -> Result<(), String> {
        let body = json!({"content": card.to_string()});
        let path = format!("/open-apis/im/v1/messages/{message_id}");
        self.call(app, Method::PATCH, &path, Some(&body))
            .await
            .map(|_| ())
    }
}

/// Reads an OpenAPI answer: `code == 0` is success whatever the HTTP status says.
async fn classify(response: reqwest::Response) -> Result<Value, Failure> {
    let status = response.status();
    let reset = response
        .headers()
        .get("x-ogw-ratelimit-reset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Option<Value> = response.json().await.ok();
    let code = body.as_ref().and_then(|body| body["code"].as_i64());
    match code {
        Some(0) => Ok(body.unwrap_or_default()),
        Some(code) if TOKEN_CODES.contains(&code) => Err(Failure::Token),
        Some(code) if RATE_LIMIT_CODES.contains(&code) => Err(Failure::RateLimited(reset)),
        _ if status == StatusCode::TOO_MANY_REQUESTS => Err(Failure::RateLimited(reset)),
        Some(code) => Err(Failure::Other(format!(
            "feishu answered {status}, code {code}: {}",
            body.as_ref()
                .and_then(|body| body["msg"].as_str())
                .unwrap_or("")
        ))),
        None => Err(Failure::Other(format!(
            "feishu answered {status} without a JSON envelope"
        ))),
    }
}
