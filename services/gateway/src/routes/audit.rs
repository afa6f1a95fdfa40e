//! `GET /v1/audit` (the org's audit events, newest first, filtered, a page at a time) and
//! `GET /v1/audit/export` (the same events as NDJSON, streamed), for admin keys.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sable_core::OrgId;
use sable_store::{AuditCursor, AuditFilter, AuditRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(export_events))
}

/// A page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// One audit event (the same shape as `AuditRecord::to_json`, which the CLI prints).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEvent {
    id: Uuid,
    /// Its place in the org's hash chain, once sealed.
    seq: Option<i64>,
    /// RFC 3339 with microseconds.
    time: String,
    actor: String,
    actor_name: Option<String>,
    action: String,
    subject: AuditSubject,
    /// `ok`, `error`, `denied` or `rejected`.
    outcome: String,
    severity: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    turn_id: Option<Uuid>,
    session_id: Option<Uuid>,
    /// What the action's kind records (never secrets or prompts).
    details: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditSubject {
    kind: String,
    id: String,
}

impl From<&AuditRecord> for AuditEvent {
    fn from(event: &AuditRecord) -> Self {
        Self {
            id: event.id,
            seq: event.seq,
            time: event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: event.actor.clone(),
            actor_name: event.actor_name.clone(),
            action: event.action.clone(),
            subject: AuditSubject {
                kind: event.subject_kind.clone(),
                id: event.subject_id.clone(),
            },
            outcome: event.outcome.clone(),
            severity: event.severity.clone(),
            request_id: event.request_id.clone(),
            trace_id: event.trace_id.clone(),
            turn_id: event.turn_id,
            session_id: event.session_id,
            details: serde_json::from_str(&event.details).unwrap_or(Value::Null),
        }
    }
}

/// Events per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
/// Events an export reads from the store at a time.
const EXPORT_BATCH: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this action (`message.accepted`, `key.created`, ...).
    action: Option<String>,
    /// Only this actor (`key:<prefix>`, `system`, ...).
    actor: Option<String>,
    /// Only this subject id.
    subject: Option<String>,
    /// `ok`, `error`, `denied` or `rejected`.
    outcome: Option<String>,
    #[param(format = Uuid)]
    turn_id: Option<String>,
    #[param(format = Uuid)]
    session_id: Option<String>,
    /// An RFC 3339 time: events at or after it.
    #[param(format = DateTime)]
    since: Option<String>,
    /// An RFC 3339 time: events before it.
    #[param(format = DateTime)]
    until: Option<String>,
    /// The `next_cursor` of the previous page (not for an export).
    cursor: Option<String>,
    /// Events per page, 1 to 500 (50 by default; not for an export).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

impl AuditQuery {
    /// The store's filter, or a validation error naming the faulty parameter.
    fn into_filter(self, limit: i64) -> Result<AuditFilter, ApiError> {
        const OUTCOMES: [&str; 4] = ["ok", "error", "denied", "rejected"];
        if let Some(outcome) = &self.outcome
            && !OUTCOMES.contains(&outcome.as_str())
        {
            return Err(ApiError::Validation(format!(
                "outcome: one of {}",
                OUTCOMES.join(", ")
            )));
        }
        for (name, value) in [
            ("action", &self.action),
            ("actor", &self.actor),
            ("subject", &self.subject),
        ] {
            if value
                .as_ref()
                .is_some_and(|value| value.len() > 200 || value.contains('\0'))
            {
                return Err(ApiError::Validation(format!(
                    "{name}: at most 200 characters, no NUL"
                )));
            }
        }
        let before = self
            .cursor
            .map(|cursor| {
                AuditCursor::decode(&cursor).ok_or_else(|| {
                    ApiError::Validation("cursor: not a cursor this API returned".into())
                })
            })
            .transpose()?;
        Ok(AuditFilter {
            action: self.action,
            actor: self.actor,
            subject: self.subject,
            outcome: self.outcome,
            turn_id: parse_uuid("turn_id", self.turn_id)?,
            session_id: parse_uuid("session_id", self.session_id)?,
            since: parse_time("since", self.since)?,
            until: parse_time("until", self.until)?,
            before,
            limit,
        })
    }
}

fn parse_uuid(name: &str, value: Option<String>) -> Result<Option<Uuid>, ApiError> {
    value
        .map(|value| {
            Uuid::parse_str(&value)
                .map_err(|error| ApiError::Validation(format!("{name}: not an id ({error})")))
        })
        .transpose()
}

fn parse_time(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|value| {
            DateTime::parse_from_rfc3339(&value)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|error| {
                    ApiError::Validation(format!(
                        "{name}: an RFC 3339 time such as 2026-01-31T09:00:00Z ({error})"
                    ))
                })
        })
        .transpose()
}

/// The org's audit events, newest first, filtered, a page at a time (admin keys only).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn list_events(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        )));
    }
    // One more than the page tells whether another page follows.
    let filter = query.into_filter(limit + 1)?;
    let mut events = state.store.audit_events(caller.org_id, &filter).await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_cursor = more
        .then(|| events.last().map(|event| AuditCursor::of(event).encode()))
        .flatten();
    Ok(Json(AuditPage {
        events: events.iter().map(AuditEvent::from).collect(),
        next_cursor,
    }))
}

/// Streams every matching event, newest first, one JSON object per line (admin keys
/// only). A line `{"error":{...}}` ends an export cut short.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "NDJSON, one `AuditEvent` a line", content_type = "application/x-ndjson", body = String),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn export_events(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(ApiError::Validation(
            "limit, cursor: an export has neither; narrow it with since and until".into(),
        ));
    }
    let filter = query.into_filter(EXPORT_BATCH)?;
    // The first batch is read before answering, so a failing store is a 503, not a
    // stream cut short.
    let first = state.store.audit_events(caller.org_id, &filter).await?;
    let stream = export_stream(state.store.clone(), caller.org_id, filter, first);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn export_stream(
    store: Store,
    org_id: OrgId,
    filter: AuditFilter,
    first: Vec<AuditRecord>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold((Some(first), filter), move |(batch, mut filter)| {
        let store = store.clone();
        async move {
            let batch = match batch {
                Some(batch) => batch,
                None => match store.audit_events(org_id, &filter).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        // The answer has started: the stream ends early and says so.
                        tracing::warn!(%error, "audit export cut short");
                        let line = json!({"error": {"code": "unavailable", "message": "the export was cut short; resume with until set to the last time received"}});
                        return Some((
                            Ok(Bytes::from(format!("{line}\n"))),
                            (Some(Vec::new()), filter),
                        ));
                    }
                },
            };
            let last = batch.last()?;
            filter.before = Some(AuditCursor::of(last));
            let full = batch.len() as i64 == filter.limit;
            let mut text = String::new();
            for event in &batch {
                text.push_str(&serde_json::to_string(&AuditEvent::from(event)).unwrap_or_default());
                text.push('\n');
            }
            // A short batch is the last: the next step finds nothing to send.
            let next = if full { None } else { Some(Vec::new()) };
            Some((Ok(Bytes::from(text)), (next, filter)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's event is the one the CLI prints (`AuditRecord::to_json`).
    #[test]
    fn an_event_has_the_shape_of_the_record_json() {
        let record = AuditRecord {
            id: Uuid::now_v7(),
            org_id: OrgId::new(),
            seq: Some(7),
            time: Utc::now(),
            actor: "key:abc".into(),
            actor_name: None,
            action: "key.created".into(),
            subject_kind: "key".into(),
            subject_id: "def".into(),
            outcome: "ok".into(),
            severity: "info".into(),
            request_id: Some("r".into()),
            trace_id: None,
            turn_id: Some(Uuid::now_v7()),
            session_id: None,
            details: r#"{"role":"admin"}"#.into(),
            position: 0,
        };
        assert_eq!(
            serde_json::to_value(AuditEvent::from(&record)).unwrap(),
            record.to_json()
        );
    }
}
