//! A fake Feishu / Lark open platform: the token endpoint, bot info, and the reply and
//! send endpoints (recording every request, honouring `uuid` as the real one does), the
//! card update endpoint (`PATCH`, shared cards only, recorded), with rate-limit and
//! token-expiry injection; and an event sender that encrypts and signs callbacks (events
//! and card actions) exactly as Feishu does (AES-256-CBC, `X-Lark-Signature`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// One request to a message endpoint, as the fake received it.
#[derive(Debug, Clone)]
pub struct FeishuRequest {
    /// `reply` or `send`.
    pub kind: &'static str,
    /// The message replied to (`reply`), or the receive id (`send`).
    pub target: String,
    pub msg_type: String,
    /// `content`, parsed from the JSON string it must be.
    pub content: Value,
    pub uuid: Option<String>,
    /// Whether the fake accepted it (false: refused for the token or the rate limit).
    pub accepted: bool,
}

impl FeishuRequest {
    /// The text of a `text` message, of every text-like element of a `post`, or of an
    /// interactive card's markdown.
    pub fn text(&self) -> String {
        if self.msg_type == "interactive" {
            return card_text(&self.content);
        }
        if let Some(text) = self.content["text"].as_str() {
            return text.to_owned();
        }
        let post = self
            .content
            .as_object()
            .and_then(|locales| locales.values().next())
            .cloned()
            .unwrap_or_default();
        let mut text = String::new();
        for paragraph in post["content"].as_array().into_iter().flatten() {
            for element in paragraph.as_array().into_iter().flatten() {
                text.push_str(element["text"].as_str().unwrap_or(""));
            }
        }
        text
    }
}

#[derive(Debug, Default)]
struct Platform {
    app_id: String,
    app_secret: String,
    bot_open_id: String,
    token_requests: usize,
    valid_tokens: HashSet<String>,
    requests: Vec<FeishuRequest>,
    created_by_uuid: HashMap<String, String>,
    rate_limit_next: usize,
    rate_limited: usize,
    long_connection: Option<crate::fake_feishu_ws::Discovery>,
    /// Messages created, by id: their `msg_type` and whether they are shared cards.
    created: HashMap<String, (String, bool)>,
    card_updates: Vec<FeishuCardUpdate>,
}

/// One `PATCH` of a card message, as the fake received it.
#[derive(Debug, Clone)]
pub struct FeishuCardUpdate {
    pub message_id: String,
    /// The new card, parsed from the JSON string it must be.
    pub content: Value,
    /// False: refused (unknown message, not a shared card, bad token).
    pub accepted: bool,
    /// When the fake received it.
    pub received_at: std::time::Instant,
}

impl FeishuCardUpdate {
    /// The text of the card's markdown elements.
    pub fn text(&self) -> String {
        card_text(&self.content)
    }
}

/// The markdown and plain text of a card 1.0 (`elements`) or 2.0 (`body.elements`), one
/// element per line.
pub fn card_text(card: &Value) -> String {
    fn walk(value: &Value, lines: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                let tag = map.get("tag").and_then(Value::as_str).unwrap_or("");
                if matches!(tag, "markdown" | "plain_text" | "lark_md")
                    && let Some(text) = map.get("content").and_then(Value::as_str)
                {
                    lines.push(text.to_owned());
                    return;
                }
                for (key, child) in map {
                    if key != "header" && key != "value" {
                        walk(child, lines);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, lines)),
            _ => {}
        }
    }
    let mut lines = Vec::new();
    walk(&card["elements"], &mut lines);
    walk(&card["body"]["elements"], &mut lines);
    lines.join("\n")
}

/// The `value` of the card's button labelled `label`.
pub fn button_value(card: &Value, label: &str) -> Option<Value> {
    fn find(value: &Value, label: &str) -> Option<Value> {
        match value {
            Value::Object(map) => {
                if map.get("tag").and_then(Value::as_str) == Some("button")
                    && map["text"]["content"].as_str() == Some(label)
                {
                    return map.get("value").cloned();
                }
                map.values().find_map(|child| find(child, label))
            }
            Value::Array(items) => items.iter().find_map(|item| find(item, label)),
            _ => None,
        }
    }
    find(card, label)
}

/// A running fake on 127.0.0.1 (port chosen by the OS), for one app.
#[derive(Clone)]
pub struct FakeFeishu {
    /// What the app's `base_url` should be.
    pub base_url: String,
    pub app_id: String,
    pub app_secret: String,
    /// The bot's own open_id (what `GET /open-apis/bot/v3/info` answers).
    pub bot_open_id: String,
    platform: Arc<Mutex<Platform>>,
}

impl FakeFeishu {
    pub async fn start(app_id: &str, app_secret: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let bot_open_id = format!("ou_bot{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let platform = Arc::new(Mutex::new(Platform {
            app_id: app_id.to_owned(),
            app_secret: app_secret.to_owned(),
            bot_open_id: bot_open_id.clone(),
            ..Platform::default()
        }));
        let app = Router::new()
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(issue_token),
            )
            .route("/open-apis/bot/v3/info", get(bot_info))
            .route("/open-apis/im/v1/messages/{message_id}/reply", post(reply))
            .route("/open-apis/im/v1/messages", post(send))
            .route("/callback/ws/endpoint", post(discover_long_connection))
            .route("/open-apis/im/v1/messages/{message_id}", patch(update_card))
            .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") })
            .with_state(platform.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            app_id: app_id.to_owned(),
            app_secret: app_secret.to_owned(),
            bot_open_id,
            platform,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Platform> {
        self.platform.lock().expect("fake feishu lock")
    }

    /// Every request to a message endpoint, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<FeishuRequest> {
        self.lock().requests.clone()
    }

    /// What the chat shows: the accepted requests, one per `uuid` (a repeated uuid
    /// creates no second message, as on the real platform).
    pub fn messages(&self) -> Vec<FeishuRequest> {
        let mut seen = HashSet::new();
        self.lock()
            .requests
            .iter()
            .filter(|request| request.accepted)
            .filter(|request| match &request.uuid {
                Some(uuid) => seen.insert(uuid.clone()),
                None => true,
            })
            .cloned()
            .collect()
    }

    /// Every card `PATCH`, in arrival order (refused ones included).
    pub fn card_updates(&self) -> Vec<FeishuCardUpdate> {
        self.lock().card_updates.clone()
    }

    /// The accepted `PATCH`es of one message, in order.
    pub fn updates_of(&self, message_id: &str) -> Vec<FeishuCardUpdate> {
        self.lock()
            .card_updates
            .iter()
            .filter(|update| update.accepted && update.message_id == message_id)
            .cloned()
            .collect()
    }

    /// The id of the message a request with this `uuid` created.
    pub fn message_id_of(&self, uuid: &str) -> Option<String> {
        self.lock().created_by_uuid.get(uuid).cloned()
    }

    /// How many tokens were asked for.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Every token issued so far stops working (calls answer 99991663).
    pub fn expire_tokens(&self) {
        self.lock().valid_tokens.clear();
    }

    /// The next `count` message requests are refused with HTTP 429 / 99991400.
    pub fn rate_limit_next(&self, count: usize) {
        self.lock().rate_limit_next = count;
    }

    /// Requests refused by the injected rate limit so far.
    pub fn rate_limited(&self) -> usize {
        self.lock().rate_limited
    }

    /// Endpoint discovery answers with this long-connection server (see `FakeFeishuWs`).
    pub(crate) fn serve_long_connection(&self, discovery: crate::fake_feishu_ws::Discovery) {
        self.lock().long_connection = Some(discovery);
    }
}

/// `POST /callback/ws/endpoint`: the long connection's URL and `ClientConfig`, for the
/// app's credentials (PascalCase keys, as the real endpoint has them).
async fn discover_long_connection(
    State(platform): State<Arc<Mutex<Platform>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let platform = platform.lock().expect("lock");
    if body["AppID"].as_str() != Some(&platform.app_id)
        || body["AppSecret"].as_str() != Some(&platform.app_secret)
    {
        return Json(json!({"code": 10003, "msg": "invalid param", "data": {}}));
    }
    match &platform.long_connection {
        Some(discovery) => Json(json!({"code": 0, "msg": "ok", "data": discovery.answer()})),
        None => Json(json!({"code": 1000040343, "msg": "no long connection here", "data": {}})),
    }
}

async fn issue_token(
    State(platform): State<Arc<Mutex<Platform>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut platform = platform.lock().expect("lock");
    platform.token_requests += 1;
    if body["app_id"].as_str() != Some(&platform.app_id)
        || body["app_secret"].as_str() != Some(&platform.app_secret)
    {
        // Real behaviour: HTTP 200 even on failure.
        return Json(json!({"code": 10003, "msg": "invalid param", "data": {}}));
    }
    let token = format!("t-{}", uuid::Uuid::new_v4().simple());
    platform.valid_tokens.insert(token.clone());
    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200}))
}

/// Checks `Authorization: Bearer <valid token>`; the refusal the real platform gives.
fn authorize(platform: &Platform, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        None => Err(Box::new(envelope_error(
            StatusCode::BAD_REQUEST,
            99991661,
            "Missing access token for authorization",
        ))),
        Some(token) if !platform.valid_tokens.contains(token) => Err(Box::new(envelope_error(
            StatusCode::BAD_REQUEST,
            99991663,
            "Invalid access token for authorization",
        ))),
        Some(_) => Ok(()),
    }
}

fn envelope_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "msg": msg, "error": {"log_id": "fake"}})),
    )
        .into_response()
}

async fn bot_info(State(platform): State<Arc<Mutex<Platform>>>, headers: HeaderMap) -> Response {
    let platform = platform.lock().expect("lock");
    if let Err(refusal) = authorize(&platform, &headers) {
        return *refusal;
    }
    Json(json!({"code": 0, "msg": "ok", "bot": {"open_id": platform.bot_open_id, "app_name": "SableBot", "activate_status": 2}}))
        .into_response()
}

async fn reply(
    State(platform): State<Arc<Mutex<Platform>>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record(&platform, "reply", message_id, &headers, &body)
}

async fn send(
    State(platform): State<Arc<Mutex<Platform>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let target = body["receive_id"].as_str().unwrap_or_default().to_owned();
    record(&platform, "send", target, &headers, &body)
}

fn record(
    platform: &Arc<Mutex<Platform>>,
    kind: &'static str,
    target: String,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let mut platform = platform.lock().expect("lock");
    let Some(content) = body["content"]
        .as_str()
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
    else {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            230001,
            "content must be a JSON string",
        );
    };
    let mut request = FeishuRequest {
        kind,
        target,
        msg_type: body["msg_type"].as_str().unwrap_or_default().to_owned(),
        content,
        uuid: body["uuid"].as_str().map(str::to_owned),
        accepted: false,
    };
    let refusal = authorize(&platform, headers)
        .err()
        .map(|refusal| *refusal)
        .or_else(|| {
            (platform.rate_limit_next > 0).then(|| {
                platform.rate_limit_next -= 1;
                platform.rate_limited += 1;
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("x-ogw-ratelimit-limit", "50"),
                        ("x-ogw-ratelimit-reset", "1"),
                    ],
                    Json(json!({"code": 99991400, "msg": "request trigger frequency limit"})),
                )
                    .into_response()
            })
        });
    if let Some(refusal) = refusal {
        platform.requests.push(request);
        return refusal;
    }
    request.accepted = true;
    let created = match &request.uuid {
        Some(uuid) => platform
            .created_by_uuid
            .entry(uuid.clone())
            .or_insert_with(new_message_id)
            .clone(),
        None => new_message_id(),
    };
    let shared = request.content["config"]["update_multi"] == json!(true);
    platform
        .created
        .entry(created.clone())
        .or_insert_with(|| (request.msg_type.clone(), shared));
    platform.requests.push(request);
    Json(json!({"code": 0, "msg": "success", "data": {"message_id": created}})).into_response()
}

/// `PATCH /open-apis/im/v1/messages/{message_id}`: only an interactive message this app
/// sent as a shared card (`update_multi`), and the new card must be shared too.
async fn update_card(
    State(platform): State<Arc<Mutex<Platform>>>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut platform = platform.lock().expect("lock");
    let Some(content) = body["content"]
        .as_str()
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
    else {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            230001,
            "content must be a JSON string",
        );
    };
    let mut update = FeishuCardUpdate {
        message_id: message_id.clone(),
        content,
        accepted: false,
        received_at: std::time::Instant::now(),
    };
    let refusal = authorize(&platform, &headers).err().map(|refusal| *refusal);
    let refusal = refusal.or_else(|| match platform.created.get(&message_id) {
        Some((msg_type, true)) if msg_type == "interactive" => None,
        Some(_) => Some(envelope_error(
            StatusCode::BAD_REQUEST,
            230001,
            "only shared interactive cards can be updated",
        )),
        None => Some(envelope_error(
            StatusCode::BAD_REQUEST,
            230001,
            "message not found",
        )),
    });
    let refusal = refusal.or_else(|| {
        (update.content["config"]["update_multi"] != json!(true)).then(|| {
            envelope_error(
                StatusCode::BAD_REQUEST,
                230099,
                "the new card must set config.update_multi",
            )
        })
    });
    if let Some(refusal) = refusal {
        platform.card_updates.push(update);
        return refusal;
    }
    update.accepted = true;
    platform.card_updates.push(update);
    Json(json!({"code": 0, "msg": "success", "data": {}})).into_response()
}

fn new_message_id() -> String {
    format!("om_{}", uuid::Uuid::new_v4().simple())
}

/// A message a user sends the bot (the fields of `im.message.receive_v1` tests vary).
#[derive(Debug, Clone)]
pub struct FeishuMessage {
    pub event_id: String,
    pub message_id: String,
    pub chat_id: String,
    /// `p2p` or `group`.
    pub chat_type: String,
    pub sender_open_id: String,
    pub text: String,
    /// `(placeholder key, open_id, name)`; the text should contain each key.
    pub mentions: Vec<(String, String, String)>,
    pub thread_id: Option<String>,
}

impl FeishuMessage {
    /// A p2p text message with fresh event and message ids.
    pub fn p2p(sender_open_id: &str, text: &str) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            message_id: new_message_id(),
            chat_id: format!("oc_{}", uuid::Uuid::new_v4().simple()),
            chat_type: "p2p".into(),
            sender_open_id: sender_open_id.to_owned(),
            text: text.to_owned(),
            mentions: Vec::new(),
            thread_id: None,
        }
    }

    /// A group text message in `chat_id`.
    pub fn group(chat_id: &str, sender_open_id: &str, text: &str) -> Self {
        Self {
            chat_id: chat_id.to_owned(),
            chat_type: "group".into(),
            ..Self::p2p(sender_open_id, text)
        }
    }

    /// Mentions `open_id` as `@_user_N` in front of the text.
    pub fn mentioning(mut self, open_id: &str, name: &str) -> Self {
        let key = format!("@_user_{}", self.mentions.len() + 1);
        self.text = format!("{key} {}", self.text);
        self.mentions
            .push((key, open_id.to_owned(), name.to_owned()));
        self
    }
}

/// A callback ready to POST: the exact body bytes and Feishu's headers.
#[derive(Debug, Clone)]
pub struct FeishuCallback {
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// Builds callbacks as Feishu's event push does, for one app's settings.
#[derive(Debug, Clone)]
pub struct FeishuEventSender {
    pub app_id: String,
    pub verification_token: String,
    /// Set: bodies are encrypted and signed.
    pub encrypt_key: Option<String>,
}

impl FeishuEventSender {
    /// The `url_verification` handshake.
    pub fn challenge(&self, challenge: &str) -> FeishuCallback {
        self.callback(&json!({
            "challenge": challenge,
            "token": self.verification_token,
            "type": "url_verification",
        }))
    }

    /// The v2 `im.message.receive_v1` event of `message`.
    pub fn message_event(&self, message: &FeishuMessage) -> Value {
        let mentions: Vec<Value> = message
            .mentions
            .iter()
            .map(|(key, open_id, name)| {
                json!({"key": key, "id": {"open_id": open_id, "union_id": "on_x", "user_id": null}, "name": name, "tenant_key": "736588c9260f175e"})
            })
            .collect();
        let mut body = json!({
            "message_id": message.message_id,
            "chat_id": message.chat_id,
            "chat_type": message.chat_type,
            "message_type": "text",
            "content": json!({"text": message.text}).to_string(),
            "create_time": "1752346850837",
        });
        if !mentions.is_empty() {
            body["mentions"] = Value::Array(mentions);
        }
        if let Some(thread_id) = &message.thread_id {
            body["thread_id"] = json!(thread_id);
        }
        json!({
            "schema": "2.0",
            "header": {
                "event_id": message.event_id,
                "event_type": "im.message.receive_v1",
                "create_time": "1752346850837",
                "token": self.verification_token,
                "app_id": self.app_id,
                "tenant_key": "736588c9260f175e",
            },
            "event": {
                "sender": {
                    "sender_id": {"open_id": message.sender_open_id, "union_id": "on_x", "user_id": null},
                    "sender_type": "user",
                    "tenant_key": "736588c9260f175e",
                },
                "message": body,
            },
        })
    }

    /// The v2 `card.action.trigger` callback of `open_id` pressing a button whose value
    /// is `value` on the card message `open_message_id` (a fresh event id each press).
    pub fn card_action(&self, open_id: &str, open_message_id: &str, value: &Value) -> Value {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": uuid::Uuid::new_v4().simple().to_string(),
                "event_type": "card.action.trigger",
                "create_time": "1752346851837",
                "token": self.verification_token,
                "app_id": self.app_id,
                "tenant_key": "736588c9260f175e",
            },
            "event": {
                "operator": {"tenant_key": "736588c9260f175e", "open_id": open_id, "union_id": "on_x", "user_id": null},
                "token": format!("c-{}", uuid::Uuid::new_v4().simple()),
                "action": {"value": value, "tag": "button"},
                "host": "im_message",
                "context": {"open_message_id": open_message_id, "open_chat_id": "oc_fake"},
            },
        })
    }

    /// The callback of `event`: encrypted and signed when the app has an encrypt key.
    pub fn callback(&self, event: &Value) -> FeishuCallback {
        let Some(encrypt_key) = &self.encrypt_key else {
            return FeishuCallback {
                body: event.to_string(),
                headers: vec![(
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                )],
            };
        };
        let body = json!({"encrypt": encrypt(encrypt_key, &event.to_string())}).to_string();
        let timestamp = "1752346850".to_owned();
        let nonce = rand::random_range(100_000_000..999_999_999_u32).to_string();
        let signature = sign(&timestamp, &nonce, encrypt_key, body.as_bytes());
        FeishuCallback {
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("x-lark-request-timestamp".into(), timestamp),
                ("x-lark-request-nonce".into(), nonce),
                ("x-lark-signature".into(), signature),
            ],
            body,
        }
    }
}

/// `base64(iv || AES-256-CBC(SHA-256(key), iv, PKCS7(plaintext)))` with a random IV.
pub fn encrypt(encrypt_key: &str, plaintext: &str) -> String {
    let key = Sha256::digest(encrypt_key.as_bytes());
    let iv: [u8; 16] = rand::random();
    let ciphertext = Aes256CbcEnc::new_from_slices(&key, &iv)
        .expect("32-byte key, 16-byte iv")
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
    let mut raw = iv.to_vec();
    raw.extend_from_slice(&ciphertext);
    STANDARD.encode(raw)
}

/// `hex(SHA-256(timestamp || nonce || encrypt_key || body))`.
pub fn sign(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(encrypt_key.as_bytes());
    hasher.update(body);
    hex::encode(hasher.finalize())
}
