//! A fake webhook receiver: records every POST with its `Idempotency-Key`, and keeps a
//! deduplicated view (first request per key), as a real receiver honouring the key would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// What the receiver has seen so far.
#[derive(Debug, Default, Clone)]
pub struct WebhookLog {
    /// Every request, in arrival order (resends included).
    pub requests: usize,
    /// Requests without an `Idempotency-Key` header.
    pub without_key: usize,
    /// The first body received under each key: what the receiver's user sees.
    pub by_key: BTreeMap<String, Value>,
}

impl WebhookLog {
    /// Requests absorbed because their key was already seen.
    pub fn resends_absorbed(&self) -> usize {
        self.requests - self.without_key - self.by_key.len()
    }
}

/// A running receiver on 127.0.0.1, on a port chosen by the OS.
#[derive(Clone)]
pub struct FakeWebhook {
    pub url: String,
    log: Arc<Mutex<WebhookLog>>,
}

impl FakeWebhook {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(WebhookLog::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(log.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{addr}/hook"),
            log,
        })
    }

    pub fn log(&self) -> WebhookLog {
        self.log.lock().expect("lock").clone()
    }
}

async fn receive(
    State(log): State<Arc<Mutex<WebhookLog>>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> StatusCode {
    let mut log = log.lock().expect("lock");
    log.requests += 1;
    match headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
    {
        Some(key) => {
            log.by_key.entry(key.to_owned()).or_insert(body.0);
        }
        None => log.without_key += 1,
    }
    StatusCode::OK
}
