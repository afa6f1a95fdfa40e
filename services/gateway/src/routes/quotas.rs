//! `GET|PUT /v1/orgs/{org_id}/quotas` (an org's limits; only the platform admin sets
//! them) and `GET /v1/usage` (the caller's org's counters against its limits).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, TimeDelta, Utc};
use sable_core::OrgId;
use sable_store::{OrgQuotas, OrgUsage, QuotaPatch, next_day_and_month};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::routes::keys::org_in_path;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_quotas, set_quotas))
        .routes(routes!(usage))
}

/// An org's limits: each a whole number of 0 or more, or `null` (or left out) for
/// unlimited. `PUT` replaces them all.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotasBody {
    /// Messages accepted per UTC minute, on every intake path.
    #[serde(default)]
    requests_per_minute: Option<i64>,
    /// Turns queued, running or waiting for approval at once.
    #[serde(default)]
    concurrent_turns: Option<i64>,
    /// Tokens (input + output) the org's provider calls may consume per UTC day.
    #[serde(default)]
    tokens_per_day: Option<i64>,
    /// The same per UTC month.
    #[serde(default)]
    tokens_per_month: Option<i64>,
    /// Cron tasks the org may have.
    #[serde(default)]
    cron_tasks: Option<i64>,
    /// MCP servers of the org's own it may have.
    #[serde(default)]
    mcp_servers: Option<i64>,
}

/// An org's limits (`null`: unlimited).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QuotasView {
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    requests_per_minute: Option<i64>,
    concurrent_turns: Option<i64>,
    tokens_per_day: Option<i64>,
    tokens_per_month: Option<i64>,
    cron_tasks: Option<i64>,
    mcp_servers: Option<i64>,
}

impl QuotasView {
    fn new(org_id: OrgId, quotas: &OrgQuotas) -> Self {
        Self {
            org_id,
            requests_per_minute: quotas.requests_per_minute,
            concurrent_turns: quotas.concurrent_turns,
            tokens_per_day: quotas.tokens_per_day,
            tokens_per_month: quotas.tokens_per_month,
            cron_tasks: quotas.cron_tasks,
            mcp_servers: quotas.mcp_servers,
        }
    }
}

/// The caller's org's counters against its limits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageView {
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    /// When the counters were read (the database's clock).
    now: DateTime<Utc>,
    requests_per_minute: QuotaUsage,
    concurrent_turns: QuotaUsage,
    tokens_per_day: QuotaUsage,
    tokens_per_month: QuotaUsage,
    cron_tasks: QuotaUsage,
    mcp_servers: QuotaUsage,
}

/// One quota: its limit (`null`: unlimited), what is used, and for the windowed ones the
/// window and when it resets.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QuotaUsage {
    limit: Option<i64>,
    used: i64,
    /// `minute`, `day` or `month` (UTC, fixed windows); absent for counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resets_at: Option<DateTime<Utc>>,
}

impl QuotaUsage {
    fn count(limit: Option<i64>, used: i64) -> Self {
        Self {
            limit,
            used,
            window: None,
            window_start: None,
            resets_at: None,
        }
    }

    fn windowed(
        limit: Option<i64>,
        used: i64,
        window: &'static str,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
    ) -> Self {
        Self {
            window: Some(window),
            window_start: Some(start),
            resets_at: Some(end),
            ..Self::count(limit, used)
        }
    }
}

/// The org's quotas (its own org for an org's key; any org for the platform admin).
#[utoipa::path(
    get,
    path = "/v1/orgs/{org_id}/quotas",
    tag = "orgs",
    security(("api_key" = [])),
    params(("org_id" = String, Path, description = "The org's id")),
    responses(
        (status = 200, description = "The org's quotas", body = QuotasView),
        (status = 404, description = "No org the caller may act in has this id", body = ErrorBody),
    ),
)]
async fn show_quotas(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
) -> Result<Json<QuotasView>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    let quotas = state.store.org_quotas(org_id).await?;
    Ok(Json(QuotasView::new(org_id, &quotas)))
}

/// Replaces the org's quotas (the platform admin only; audited as `org.quotas_updated`).
/// Every gateway applies them within `quota_cache_ms`; this one at once.
#[utoipa::path(
    put,
    path = "/v1/orgs/{org_id}/quotas",
    tag = "orgs",
    security(("api_key" = [])),
    params(("org_id" = String, Path, description = "The org's id")),
    request_body = QuotasBody,
    responses(
        (status = 200, description = "The org's quotas as they now are", body = QuotasView),
        (status = 404, description = "No org has this id", body = ErrorBody),
        (status = 422, description = "A limit is negative", body = ErrorBody),
    ),
)]
async fn set_quotas(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
    ApiJson(body): ApiJson<QuotasBody>,
) -> Result<Json<QuotasView>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    let wanted = quotas_of(&body)?;
    let quotas = state
        .store
        .set_org_quotas(org_id, &QuotaPatch::replace_with(&wanted), &caller.actor)
        .await?;
    state.quotas.remember(org_id, quotas);
    Ok(Json(QuotasView::new(org_id, &quotas)))
}

/// The body's limits, refusing a negative one by its field's name.
fn quotas_of(body: &QuotasBody) -> Result<OrgQuotas, ApiError> {
    let fields = [
        ("requests_per_minute", body.requests_per_minute),
        ("concurrent_turns", body.concurrent_turns),
        ("tokens_per_day", body.tokens_per_day),
        ("tokens_per_month", body.tokens_per_month),
        ("cron_tasks", body.cron_tasks),
        ("mcp_servers", body.mcp_servers),
    ];
    if let Some((name, _)) = fields
        .iter()
        .find(|(_, limit)| limit.is_some_and(|limit| limit < 0))
    {
        return Err(ApiError::Validation(format!(
            "{name}: must be 0 or more, or null for unlimited"
        )));
    }
    Ok(OrgQuotas {
        requests_per_minute: body.requests_per_minute,
        concurrent_turns: body.concurrent_turns,
        tokens_per_day: body.tokens_per_day,
        tokens_per_month: body.tokens_per_month,
        cron_tasks: body.cron_tasks,
        mcp_servers: body.mcp_servers,
    })
}

/// The caller's org's counters against its quotas: requests this UTC minute, turns
/// queued or running, tokens today and this month, cron tasks, MCP servers.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "orgs",
    security(("api_key" = [])),
    responses((status = 200, description = "The org's usage against its quotas", body = UsageView)),
)]
async fn usage(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<UsageView>, ApiError> {
    let org_id = caller.org_id;
    let quotas = state.store.org_quotas(org_id).await?;
    let usage = state.store.org_usage(org_id).await?;
    Ok(Json(usage_view(org_id, &quotas, &usage)))
}

fn usage_view(org_id: OrgId, quotas: &OrgQuotas, usage: &OrgUsage) -> UsageView {
    let (day_start, month_start) = sable_store::day_and_month_start(usage.now);
    let (next_day, next_month) = next_day_and_month(usage.now);
    let minute = (
        usage.minute_start,
        usage.minute_start + TimeDelta::minutes(1),
    );
    UsageView {
        org_id,
        now: usage.now,
        requests_per_minute: QuotaUsage::windowed(
            quotas.requests_per_minute,
            usage.requests_this_minute,
            "minute",
            minute,
        ),
        concurrent_turns: QuotaUsage::count(quotas.concurrent_turns, usage.live_turns),
        tokens_per_day: QuotaUsage::windowed(
            quotas.tokens_per_day,
            usage.tokens_today,
            "day",
            (day_start, next_day),
        ),
        tokens_per_month: QuotaUsage::windowed(
            quotas.tokens_per_month,
            usage.tokens_this_month,
            "month",
            (month_start, next_month),
        ),
        cron_tasks: QuotaUsage::count(quotas.cron_tasks, usage.cron_tasks),
        // The org's own servers; the deployment's shared ones do not count.
        mcp_servers: QuotaUsage::count(quotas.mcp_servers, usage.mcp_servers),
    }
}
