//! `GET /v1/audit` (the org's audit events, newest first, filtered, a page at a time) and
//! `GET /v1/audit/export` (the same events as NDJSON, streamed), for admin keys.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use sable_core::OrgId;
use sable_store::{AuditCursor, AuditFilter, AuditRecord, Store};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_events))
        .route("/v1/audit/export", get(export_events))
}

/// Events per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
/// Events an export reads from the store at a time.
const EXPORT_BATCH: i64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    outcome: Option<String>,
    turn_id: Option<String>,
    session_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
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

async fn list_events(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "events": events.iter().map(AuditRecord::to_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// Streams every matching event, newest first, one JSON object per line.
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
                text.push_str(&event.to_json().to_string());
                text.push('\n');
            }
            // A short batch is the last: the next step finds nothing to send.
            let next = if full { None } else { Some(Vec::new()) };
            Some((Ok(Bytes::from(text)), (next, filter)))
        }
    })
}
