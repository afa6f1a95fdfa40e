//! A fake OpenTelemetry collector: accepts OTLP/HTTP protobuf exports on `/v1/traces`
//! (a collector's path) and `/api/public/otel/v1/traces` (Langfuse's), decodes them with the official protobuf
//! types, and keeps every span and the raw request bodies for assertions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;

/// One exported span, flattened: ids in hex, attributes as JSON values.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The resource's `service.name`.
    pub service_name: String,
    pub resource: BTreeMap<String, Value>,
    pub attributes: BTreeMap<String, Value>,
}

impl ExportedSpan {
    /// The attribute as a string, if it is one.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ExportedSpan>,
    bodies: Vec<Bytes>,
    headers: Vec<HeaderMap>,
}

/// The receiver, serving until dropped with the test's runtime.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            // Where Langfuse takes OTLP.
            .route("/api/public/otel/v1/traces", post(export))
            .with_state(received.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, received })
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.lock().spans.clone()
    }

    /// Whether any export request's raw bytes contain `marker` (protobuf keeps strings
    /// as UTF-8, so this finds it in any attribute, event or name).
    pub fn any_export_contains(&self, marker: &str) -> bool {
        let marker = marker.as_bytes();
        self.lock()
            .bodies
            .iter()
            .any(|body| body.windows(marker.len()).any(|window| window == marker))
    }

    /// The headers of every export request (to check authentication).
    pub fn request_headers(&self) -> Vec<HeaderMap> {
        self.lock().headers.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().expect("receiver lock")
    }
}

async fn export(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.clone()) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let spans = flatten(request);
    let mut received = received.lock().expect("receiver lock");
    received.spans.extend(spans);
    received.bodies.push(body);
    received.headers.push(headers);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(
            resource_spans
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default(),
        );
        let service_name = resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            spans.push(ExportedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name,
                service_name: service_name.clone(),
                resource: resource.clone(),
                attributes: attributes(span.attributes),
            });
        }
    }
    spans
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    pairs
        .into_iter()
        .map(|pair| (pair.key, pair.value.map_or(Value::Null, json)))
        .collect()
}

fn json(value: AnyValue) -> Value {
    match value.value {
        Some(any_value::Value::StringValue(text)) => Value::from(text),
        Some(any_value::Value::BoolValue(flag)) => Value::from(flag),
        Some(any_value::Value::IntValue(number)) => Value::from(number),
        Some(any_value::Value::DoubleValue(number)) => Value::from(number),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.into_iter().map(json).collect())
        }
        Some(any_value::Value::BytesValue(bytes)) => Value::from(hex(&bytes)),
        Some(any_value::Value::KvlistValue(list)) => {
            Value::Object(attributes(list.values).into_iter().collect())
        }
        Some(_) | None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
