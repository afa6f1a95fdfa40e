//! The audit trail: who did what to which subject and how it ended, written by the same
//! statement or transaction as the action it records; sealed afterwards into a gap-free
//! hash chain per org; verified; trimmed by retention behind a checkpoint.
//!
//! Events never carry prompts, replies, tool arguments or results, whatever the capture
//! policy: those stay in the tables of the turn they belong to. Details hold names,
//! counts, codes and outcomes only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sable_core::{ApiKeyId, CronTaskId, OrgId, SessionId, TurnId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{PgStore, RunnableTurn, StoreError};

/// Who acted, and the request it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `key:<api key id>`, `feishu:<open_id>`, `cron:<task id>`, `agent:<agent id>` (a
    /// change an agent made through its tools), `platform_admin` (`SABLE_ADMIN_KEY`) or
    /// `system`.
    pub id: String,
    /// The key's name, when it has one.
    pub name: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    /// The deployment itself: workers, sweepers, the sealer, the admin CLI.
    pub fn system() -> Self {
        Self::named("system", None)
    }

    pub fn key(key_id: ApiKeyId, name: Option<String>) -> Self {
        Self::named(format!("key:{key_id}"), name)
    }

    pub fn cron(task_id: CronTaskId) -> Self {
        Self::named(format!("cron:{task_id}"), None)
    }

    pub fn feishu(open_id: &str) -> Self {
        Self::named(format!("feishu:{open_id}"), None)
    }

    /// An agent acting through its tools, named by the turn's user when there is one.
    pub fn agent(agent_id: &str, user_id: Option<&str>) -> Self {
        Self::named(format!("agent:{agent_id}"), user_id.map(str::to_owned))
    }

    /// Whoever presented the deployment's bootstrap key (`SABLE_ADMIN_KEY`).
    pub fn platform_admin() -> Self {
        Self::named("platform_admin", Some("SABLE_ADMIN_KEY".to_owned()))
    }

    /// The admin CLI, named as such so its changes are told apart from the API's.
    pub fn admin_cli() -> Self {
        Self::named("system", Some("sable admin".to_owned()))
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    fn named(id: impl Into<String>, name: Option<String>) -> Self {
        Self {
            id: id.into(),
            name,
            request_id: None,
        }
    }
}

/// How the recorded action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Ok,
    Error,
    /// Refused by a person or a policy (an approval denied, a failed authentication).
    Denied,
    /// Refused as invalid (an unknown tool, a repeated call, malformed arguments).
    Rejected,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Denied => "denied",
            Self::Rejected => "rejected",
        }
    }
}

/// How much an operator should care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
        }
    }
}

/// An event to write with the action it records.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// The nil id for events of no org.
    pub org_id: OrgId,
    pub actor: Actor,
    pub action: &'static str,
    pub subject_kind: &'static str,
    pub subject_id: String,
    pub outcome: AuditOutcome,
    pub severity: Severity,
    pub trace_id: Option<String>,
    pub turn_id: Option<TurnId>,
    pub session_id: Option<SessionId>,
    /// Names, counts, codes: never content or secrets.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An `ok`, `info` event with no details.
    pub fn new(
        org_id: OrgId,
        actor: &Actor,
        action: &'static str,
        subject_kind: &'static str,
        subject_id: impl Into<String>,
    ) -> Self {
        Self {
            org_id,
            actor: actor.clone(),
            action,
            subject_kind,
            subject_id: subject_id.into(),
            outcome: AuditOutcome::Ok,
            severity: Severity::Info,
            trace_id: None,
            turn_id: None,
            session_id: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// A worker's event about `turn` (actor `system`, the turn's trace).
    pub fn of_turn(
        turn: &RunnableTurn,
        action: &'static str,
        subject_kind: &'static str,
        subject_id: impl Into<String>,
    ) -> Self {
        let mut event = Self::new(
            turn.org_id,
            &Actor::system(),
            action,
            subject_kind,
            subject_id,
        );
        event.turn_id = Some(turn.id);
        event.session_id = Some(turn.session_id);
        event.trace_id = trace_id_of(turn.trace_parent.as_deref());
        event
    }

    pub fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn in_session(mut self, session_id: SessionId) -> Self {
        self.session_id = Some(session_id);
        self
    }

    pub fn in_turn(mut self, turn_id: TurnId, session_id: SessionId) -> Self {
        self.turn_id = Some(turn_id);
        self.session_id = Some(session_id);
        self
    }

    pub fn trace(mut self, trace_parent: Option<&str>) -> Self {
        self.trace_id = trace_id_of(trace_parent);
        self
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(trace_parent: Option<&str>) -> Option<String> {
    let trace_id = trace_parent?.split('-').nth(1)?;
    (trace_id.len() == 32 && trace_id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .then(|| trace_id.to_owned())
}

/// The org id events of no org are filed under.
pub fn platform_org() -> OrgId {
    OrgId::from_uuid(Uuid::nil())
}

/// A stored event as `GET /v1/audit` shows it; `seq` once the sealer chained it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub org_id: OrgId,
    pub seq: Option<i64>,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub actor_name: Option<String>,
    pub action: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub outcome: String,
    pub severity: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub turn_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The details as JSON text, as stored.
    pub details: String,
    /// Where the event stands in its org's listing, newest first: the transaction that
    /// wrote it on Postgres, its row number on SQLite (0 where a read does not need it).
    /// Not part of the event: the chain does not hash it.
    pub position: i64,
}

impl AuditRecord {
    /// The event as `GET /v1/audit`, its export and `sable admin audit` show it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "seq": self.seq,
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "actor": self.actor,
            "actor_name": self.actor_name,
            "action": self.action,
            "subject": {"kind": self.subject_kind, "id": self.subject_id},
            "outcome": self.outcome,
            "severity": self.severity,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "details": serde_json::from_str::<serde_json::Value>(&self.details)
                .unwrap_or(serde_json::Value::Null),
        })
    }

    /// The text the chain hashes: every field, in a fixed order, as one JSON array.
    pub(crate) fn canonical(&self) -> String {
        let optional = |value: &Option<Uuid>| value.map(|id| id.to_string());
        serde_json::json!([
            self.id.to_string(),
            self.org_id.to_string(),
            self.time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            self.actor,
            self.actor_name,
            self.action,
            self.subject_kind,
            self.subject_id,
            self.outcome,
            self.severity,
            self.request_id,
            self.trace_id,
            optional(&self.turn_id),
            optional(&self.session_id),
            self.details,
        ])
        .to_string()
    }
}

/// The next link of a chain: `sha256(previous || canonical event)`.
pub(crate) fn chain_hash(previous: &[u8], record: &AuditRecord) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(record.canonical().as_bytes());
    hasher.finalize().to_vec()
}

/// The hash an org's chain starts from.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// Where a page of `GET /v1/audit` ends: the next page starts after this event, in the
/// order the events were written (`AuditRecord::position`, then the id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub position: i64,
    pub id: Uuid,
}

impl AuditCursor {
    pub fn of(record: &AuditRecord) -> Self {
        Self {
            position: record.position,
            id: record.id,
        }
    }

    /// `<position>_<event id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.position, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (position, id) = text.split_once('_')?;
        Some(Self {
            position: position.parse().ok()?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// Which events to list; newest first, after `before`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// An action (`tool.completed`) or a family of them (`tool.*`).
    pub action: Option<String>,
    pub actor: Option<String>,
    /// A subject id, or `kind:id`.
    pub subject: Option<String>,
    pub outcome: Option<String>,
    pub turn_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<AuditCursor>,
    pub limit: i64,
}

impl AuditFilter {
    /// The action filter as a SQL `LIKE` pattern (`tool.*` → `tool.%`).
    pub(crate) fn action_pattern(&self) -> Option<String> {
        self.action.as_ref().map(|action| {
            let escaped = action
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            match escaped.strip_suffix('*') {
                Some(prefix) => format!("{prefix}%"),
                None => escaped,
            }
        })
    }
}

/// What one pass of the sealer did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SealReport {
    pub sealed: u64,
    /// Events sealed by action.
    pub actions: std::collections::BTreeMap<String, u64>,
    /// The oldest event this pass found unsealed (the sealer's lag is measured from it).
    pub oldest_unsealed: Option<DateTime<Utc>>,
}

/// What `sable admin audit verify` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerification {
    Intact {
        /// Sealed events checked (after the retention checkpoint).
        events: u64,
        /// The newest sequence number, 0 when nothing was sealed.
        through_seq: i64,
        /// Sequence numbers retention dropped behind its checkpoint.
        dropped: i64,
        /// Events not sealed yet (not covered by this check).
        unsealed: i64,
    },
    Broken {
        /// The first sequence number whose link does not hold.
        seq: i64,
        reason: String,
    },
}

/// Seals are read this many at a time while verifying.
pub(crate) const VERIFY_PAGE: i64 = 50;

/// Events as the JSON array both backends read rows from (`json_to_recordset`,
/// `json_each`), each with a fresh id; `[]` when the audit is off.
pub(crate) fn events_json(enabled: bool, events: &[AuditEvent]) -> String {
    if !enabled || events.is_empty() {
        return "[]".to_owned();
    }
    let rows: Vec<EventRow<'_>> = events.iter().map(EventRow::of).collect();
    // Serialized straight from the events: a turn's statements carry two or three, and
    // building them as `serde_json::Value` maps first copied every field and the details.
    let json = serde_json::to_string(&rows).expect("an audit event serializes to JSON");
    // Neither backend stores a NUL in text; the escape is only there when some field had one.
    if json.contains("\\u0000") {
        json.replace("\\u0000", "")
    } else {
        json
    }
}

/// An event as one element of the array `events_json` writes, named as the columns are.
#[derive(serde::Serialize)]
struct EventRow<'a> {
    id: Uuid,
    org_id: OrgId,
    actor: &'a str,
    actor_name: Option<&'a str>,
    action: &'static str,
    subject_kind: &'static str,
    subject_id: &'a str,
    outcome: &'static str,
    severity: &'static str,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    turn_id: Option<TurnId>,
    session_id: Option<SessionId>,
    details: &'a serde_json::Value,
}

impl<'a> EventRow<'a> {
    fn of(event: &'a AuditEvent) -> Self {
        Self {
            id: Uuid::now_v7(),
            org_id: event.org_id,
            actor: &event.actor.id,
            actor_name: event.actor.name.as_deref(),
            action: event.action,
            subject_kind: event.subject_kind,
            subject_id: &event.subject_id,
            outcome: event.outcome.as_str(),
            severity: event.severity.as_str(),
            request_id: event.actor.request_id.as_deref(),
            trace_id: event.trace_id.as_deref(),
            turn_id: event.turn_id,
            session_id: event.session_id,
            details: &event.details,
        }
    }
}

/// The columns of an event row, in the order the statements below list them, with the
/// type `json_to_recordset` reads each as.
const EVENT_COLUMNS: [(&str, &str); 14] = [
    ("id", "uuid"),
    ("org_id", "uuid"),
    ("actor", "text"),
    ("actor_name", "text"),
    ("action", "text"),
    ("subject_kind", "text"),
    ("subject_id", "text"),
    ("outcome", "audit_outcome"),
    ("severity", "audit_severity"),
    ("request_id", "text"),
    ("trace_id", "text"),
    ("turn_id", "uuid"),
    ("session_id", "uuid"),
    ("details", "json"),
];

/// A Postgres statement part inserting the events of the JSON array bound as `param`,
/// once per row of `gate` (a CTE that says the action happened, e.g. `ended`), with some
/// columns taken from the statement instead (`("session_id", "turn.session_id")`).
pub(crate) fn pg_insert_events(
    param: &str,
    gate: Option<&str>,
    overrides: &[(&str, &str)],
) -> String {
    let names: Vec<&str> = EVENT_COLUMNS.iter().map(|(name, _)| *name).collect();
    let values: Vec<String> = EVENT_COLUMNS
        .iter()
        .map(|(name, _)| {
            overrides
                .iter()
                .find(|(column, _)| column == name)
                .map_or_else(|| format!("e.{name}"), |(_, value)| (*value).to_owned())
        })
        .collect();
    let types: Vec<String> = EVENT_COLUMNS
        .iter()
        .map(|(name, kind)| format!("{name} {kind}"))
        .collect();
    let from = gate.map(|gate| format!("{gate}, ")).unwrap_or_default();
    format!(
        "INSERT INTO audit_events ({}) SELECT {} FROM {from}json_to_recordset({param}::json) AS e({})",
        names.join(", "),
        values.join(", "),
        types.join(", ")
    )
}

#[derive(Clone, sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: Uuid,
    org_id: Uuid,
    seq: Option<i64>,
    time: DateTime<Utc>,
    actor: String,
    actor_name: Option<String>,
    action: String,
    subject_kind: String,
    subject_id: String,
    outcome: String,
    severity: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    turn_id: Option<Uuid>,
    session_id: Option<Uuid>,
    details: String,
    #[sqlx(default)]
    position: i64,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id.into(),
            seq: row.seq,
            time: row.time,
            actor: row.actor,
            actor_name: row.actor_name,
            action: row.action,
            subject_kind: row.subject_kind,
            subject_id: row.subject_id,
            outcome: row.outcome,
            severity: row.severity,
            request_id: row.request_id,
            trace_id: row.trace_id,
            turn_id: row.turn_id,
            session_id: row.session_id,
            details: row.details,
            position: row.position,
        }
    }
}

/// Checks one page of links against the running hash; `Err` names the first broken one.
/// `links` holds `(seq, stored hash, the event if it still exists)`.
pub(crate) fn verify_links(
    previous: &mut (i64, Vec<u8>),
    links: impl IntoIterator<Item = (i64, Vec<u8>, Option<AuditRecord>)>,
) -> Result<u64, AuditVerification> {
    let mut checked = 0;
    for (seq, stored, event) in links {
        let broken = |reason: &str| AuditVerification::Broken {
            seq,
            reason: reason.to_owned(),
        };
        if seq != previous.0 + 1 {
            return Err(AuditVerification::Broken {
                seq: previous.0 + 1,
                reason: "the sequence has a gap: this link is missing".to_owned(),
            });
        }
        let Some(event) = event else {
            return Err(broken("the event was deleted"));
        };
        let computed = chain_hash(&previous.1, &event);
        if computed != stored {
            return Err(broken("the event or its link was altered"));
        }
        *previous = (seq, computed);
        checked += 1;
    }
    Ok(checked)
}

/// The columns of a stored event, for `FROM audit_events e`.
const EVENT_SELECT: &str = "e.id, e.org_id, e.time, e.actor, e.actor_name, e.action, e.subject_kind, \
     e.subject_id, e.outcome::text AS outcome, e.severity::text AS severity, e.request_id, e.trace_id, e.turn_id, e.session_id, e.details::text AS details";

/// A Postgres event's position in its org's chain: the writing transaction, then the id.
type PgPosition = (i64, Uuid);

/// Before every position: an org's chain starts after it.
const PG_START: PgPosition = (i64::MIN, Uuid::nil());

/// An event with its position, as the sealer and verification read it.
#[derive(sqlx::FromRow)]
struct PositionedRow {
    xid: i64,
    #[sqlx(flatten)]
    event: AuditRow,
}

impl PositionedRow {
    fn into_positioned(self) -> (PgPosition, AuditRecord) {
        ((self.xid, self.event.id), AuditRecord::from(self.event))
    }
}

/// An org's chain head as a sealer pass reads it: its newest seal's end, else its
/// retention checkpoint, else the start.
#[derive(sqlx::FromRow)]
struct ChainHeadRow {
    org_id: Uuid,
    head_seq: i64,
    head_hash: Vec<u8>,
    head_xid: i64,
    head_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct PgSealRow {
    first_seq: i64,
    last_seq: i64,
    after_xid: i64,
    after_id: Uuid,
    through_xid: i64,
    through_id: Uuid,
    hashes: Vec<u8>,
}

impl From<PgSealRow> for StoredSeal<PgPosition> {
    fn from(row: PgSealRow) -> Self {
        Self {
            first_seq: row.first_seq,
            last_seq: row.last_seq,
            after: (row.after_xid, row.after_id),
            through: (row.through_xid, row.through_id),
            hashes: row.hashes,
        }
    }
}

impl PgStore {
    /// Writes events of actions that have no other write (a failed authentication, an
    /// idempotent repeat).
    pub async fn record_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        sqlx::query(&pg_insert_events("$1", None, &[]))
            .bind(self.audit_json(events))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The org's events matching `filter`, newest first in the order they were written
    /// (their position: the writing transaction, then the id), each with its sequence
    /// number once sealed (its seal's first number plus the org's events before it in the
    /// seal).
    ///
    /// The read walks the primary key `(org_id, xid, id)` down from the cursor; there is
    /// no index of event times (one more entry and log record per event: the audit's
    /// cost, docs/BENCHMARKS.md). `until` is a filter on that walk, and `since` also
    /// bounds it below: every event stamped at or after `since` was written by a
    /// transaction begun then or later, so its `xid` is above that of every event in a
    /// seal written before `since`.
    pub async fn audit_events(
        &self,
        org_id: OrgId,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let lowest = match filter.since {
            Some(since) => self.pg_position_before(org_id, since).await?,
            None => i64::MIN,
        };
        // The cursor is said twice: `e.xid <= $10` is what bounds the walk down the key,
        // since row-level security leaves the row comparison, which is exact, a filter.
        let sql = format!(
            "SELECT p.*, ( \
                 SELECT s.first_seq + (SELECT count(*) FROM audit_events x WHERE x.org_id = p.org_id \
                     AND (x.xid, x.id) > (s.after_xid, s.after_id) AND (x.xid, x.id) < (p.xid, p.id)) \
                 FROM audit_seals s WHERE s.org_id = p.org_id AND (s.through_xid, s.through_id) >= (p.xid, p.id) \
                 ORDER BY s.through_xid, s.through_id LIMIT 1 \
             ) AS seq \
             FROM (SELECT e.xid, e.xid AS position, {EVENT_SELECT} FROM audit_events e \
                 WHERE e.org_id = $1 AND e.xid >= $13 AND e.xid <= $10 AND (e.xid, e.id) < ($10, $11) AND ($2::text IS NULL OR e.action LIKE $2) AND ($3::text IS NULL OR e.actor = $3) \
                   AND ($4::text IS NULL OR e.subject_id = $4 OR e.subject_kind || ':' || e.subject_id = $4) \
                   AND ($5::text IS NULL OR e.outcome::text = $5) AND ($6::uuid IS NULL OR e.turn_id = $6) \
                   AND ($7::uuid IS NULL OR e.session_id = $7) AND ($8::timestamptz IS NULL OR e.time >= $8) \
                   AND ($9::timestamptz IS NULL OR e.time < $9) \
                 ORDER BY e.xid DESC, e.id DESC LIMIT $12) p \
             ORDER BY p.xid DESC, p.id DESC"
        );
        let rows: Vec<AuditRow> = sqlx::query_as(&sql)
            .bind(org_id.as_uuid())
            .bind(filter.action_pattern())
            .bind(&filter.actor)
            .bind(&filter.subject)
            .bind(&filter.outcome)
            .bind(filter.turn_id)
            .bind(filter.session_id)
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.before.map_or(i64::MAX, |cursor| cursor.position))
            .bind(filter.before.map_or(Uuid::max(), |cursor| cursor.id))
            .bind(filter.limit)
            .bind(lowest)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    /// A position at or below every event of the org stamped at or after `since`: the end
    /// of its newest seal written before `since`, or of its retention checkpoint,
    /// whichever is later; the start when there is neither.
    async fn pg_position_before(
        &self,
        org_id: OrgId,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let (lowest,): (Option<i64>,) = sqlx::query_as(
            "SELECT greatest( \
                 (SELECT through_xid FROM audit_seals WHERE org_id = $1 \
                      AND written_at < $2 ORDER BY written_at DESC LIMIT 1), \
                 (SELECT through_xid FROM audit_checkpoints WHERE org_id = $1))",
        )
        .bind(org_id.as_uuid())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(lowest.unwrap_or(i64::MIN))
    }

    /// Seals up to `limit` events in all, every org's, whose transactions are older than
    /// every transaction still running (so all of them are visible now, and none can
    /// appear behind a seal later), in position order, in one transaction. A second sealer
    /// waits on the advisory lock and then finds them sealed.
    ///
    /// A pass reads the events past the sealer's watermark (every event at or before it is
    /// sealed) and below its horizon once, through the BRIN index of `xid`, then the chain
    /// heads of their orgs. The watermark moves to the last event read when the pass read
    /// `limit` of them (the next pass starts there), else to the horizon.
    pub async fn seal_audit(&self, limit: i64) -> Result<SealReport, StoreError> {
        summarize_full_ranges(&self.pool).await?;
        let mut tx = self.pool.begin().await?;
        let (scope, _) = read_seal_pass(&mut tx, limit, false).await?;
        let Some((pending, watermark)) = scope.pending() else {
            return Ok(SealReport::default());
        };
        let (seals, report) = seal_pass(pending);
        if !seals.is_empty() {
            insert_pg_seals(&mut tx, &seals).await?;
        }
        if watermark > scope.watermark {
            sqlx::query(
                "UPDATE audit_sealer_state SET watermark_xid = $1, watermark_id = $2 WHERE id = 1",
            )
            .bind(watermark.0)
            .bind(watermark.1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// One sealer pass's two reads as `EXPLAIN (ANALYZE)` prints their plans (the events
    /// past the watermark, then their orgs' chain heads; the second empty when there are
    /// none), run as the sealer runs them, in a transaction rolled back after: for tests of
    /// what a pass reads.
    #[doc(hidden)]
    pub async fn explain_seal_pass(&self, limit: i64) -> Result<[Vec<String>; 2], StoreError> {
        summarize_full_ranges(&self.pool).await?;
        let mut tx = self.pool.begin().await?;
        let (_, plans) = read_seal_pass(&mut tx, limit, true).await?;
        tx.rollback().await?;
        Ok(plans)
    }

    /// Walks the org's seals from its checkpoint and reports the first broken link.
    pub async fn verify_audit(&self, org_id: OrgId) -> Result<AuditVerification, StoreError> {
        let checkpoint: Option<(i64, Vec<u8>, i64, Uuid)> = sqlx::query_as(
            "SELECT through_seq, hash, through_xid, through_id FROM audit_checkpoints WHERE org_id = $1",
        )
        .bind(org_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let dropped = checkpoint.as_ref().map_or(0, |(seq, ..)| *seq);
        let mut head = checkpoint.map_or(ChainHead::start(PG_START), |(seq, hash, xid, id)| {
            ChainHead {
                seq,
                hash,
                position: (xid, id),
            }
        });
        let mut events = 0;
        loop {
            let seals: Vec<StoredSeal<PgPosition>> = sqlx::query_as::<_, PgSealRow>(
                "SELECT first_seq, last_seq, after_xid, after_id, through_xid, through_id, hashes \
                 FROM audit_seals WHERE org_id = $1 AND first_seq > $2 ORDER BY first_seq LIMIT $3",
            )
            .bind(org_id.as_uuid())
            .bind(head.seq)
            .bind(VERIFY_PAGE)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(StoredSeal::from)
            .collect();
            let done = (seals.len() as i64) < VERIFY_PAGE;
            for seal in &seals {
                let stored = self.pg_events_in(org_id, seal.after, seal.through).await?;
                match verify_seal(&mut head, seal, stored) {
                    Ok(checked) => events += checked,
                    Err(broken) => return Ok(broken),
                }
            }
            if done {
                break;
            }
        }
        let (unsealed,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM audit_events e WHERE e.org_id = $1 AND (e.xid, e.id) > ($2, $3)",
        )
        .bind(org_id.as_uuid())
        .bind(head.position.0)
        .bind(head.position.1)
        .fetch_one(&self.pool)
        .await?;
        Ok(AuditVerification::Intact {
            events,
            through_seq: head.seq,
            dropped,
            unsealed,
        })
    }

    /// The org's events after `after` through `through`, in position order.
    async fn pg_events_in(
        &self,
        org_id: OrgId,
        after: PgPosition,
        through: PgPosition,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT e.xid, NULL::bigint AS seq, {EVENT_SELECT} FROM audit_events e \
             WHERE e.org_id = $1 AND (e.xid, e.id) > ($2, $3) AND (e.xid, e.id) <= ($4, $5) \
             ORDER BY e.xid, e.id"
        );
        let rows: Vec<PositionedRow> = sqlx::query_as(&sql)
            .bind(org_id.as_uuid())
            .bind(after.0)
            .bind(after.1)
            .bind(through.0)
            .bind(through.1)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| row.into_positioned().1)
            .collect())
    }

    /// Drops the org's oldest seals whose events are all stamped before `before`, as one
    /// range from the start of its chain, with their events, and moves its checkpoint to
    /// the range's last link; records the drop as an event of its own. Returns how many
    /// events went.
    pub async fn drop_sealed_audit(
        &self,
        org_id: OrgId,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL sable.audit_retention = 'on'")
            .execute(&mut *tx)
            .await?;
        let end: Option<(i64, Vec<u8>, i64, Uuid)> = sqlx::query_as(
            "SELECT last_seq, substr(hashes, length(hashes) - 31), through_xid, through_id FROM audit_seals \
             WHERE org_id = $1 AND last_seq = \
                 coalesce((SELECT min(first_seq) - 1 FROM audit_seals WHERE org_id = $1 AND newest_time >= $2), \
                          (SELECT max(last_seq) FROM audit_seals WHERE org_id = $1))",
        )
        .bind(org_id.as_uuid())
        .bind(before)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((through_seq, hash, through_xid, through_id)) = end else {
            return Ok(0);
        };
        let dropped =
            sqlx::query("DELETE FROM audit_events WHERE org_id = $1 AND (xid, id) <= ($2, $3)")
                .bind(org_id.as_uuid())
                .bind(through_xid)
                .bind(through_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("DELETE FROM audit_seals WHERE org_id = $1 AND last_seq <= $2")
            .bind(org_id.as_uuid())
            .bind(through_seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (org_id, through_seq, hash, dropped, through_xid, through_id) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org_id) DO UPDATE SET through_seq = $2, hash = $3, \
                 dropped = audit_checkpoints.dropped + $4, through_xid = $5, through_id = $6, updated_at = now()",
        )
        .bind(org_id.as_uuid())
        .bind(through_seq)
        .bind(&hash)
        .bind(dropped as i64)
        .bind(through_xid)
        .bind(through_id)
        .execute(&mut *tx)
        .await?;
        let event = retention_event(org_id, through_seq, dropped, before);
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// The events as the JSON array the statements read, `[]` when the audit is off.
    pub(crate) fn audit_json(&self, events: &[AuditEvent]) -> String {
        events_json(self.audit, events)
    }
}

/// Summarizes the ranges of heap pages the sealer's BRIN index has filled since the last
/// pass, so that the pass reads only the pages that can hold events past the watermark
/// (migration 0021).
async fn summarize_full_ranges(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT sable_audit_summarize()")
        .execute(pool)
        .await?;
    Ok(())
}

/// What one sealer pass read: up to its limit of the events past the watermark and
/// below the horizon, in position order, and the chain heads of their orgs.
struct PassScope {
    watermark: PgPosition,
    /// Every transaction below it has ended.
    horizon: i64,
    /// The read stopped at its limit: events past the last one may be left.
    full: bool,
    events: Vec<(PgPosition, AuditRecord)>,
    heads: HashMap<Uuid, ChainHead<PgPosition>>,
}

/// A pass's pending events: each with its org's chain head, grouped by org, each org's in
/// position order.
type Pending = Vec<(ChainHead<PgPosition>, PgPosition, AuditRecord)>;

impl PassScope {
    /// Each org's events past its head, with the head, and where the watermark moves:
    /// every event at or before it is sealed once these are. `None` when the pass found
    /// no events.
    fn pending(&self) -> Option<(Pending, PgPosition)> {
        let (last, _) = self.events.last()?;
        // Every org's events up to the last one read are here, so each org's are the
        // prefix of its unsealed events.
        let watermark = if self.full {
            *last
        } else {
            (self.horizon, Uuid::nil())
        };
        let mut by_org: Vec<&(PgPosition, AuditRecord)> = self.events.iter().collect();
        by_org.sort_by_key(|(position, event)| (event.org_id.as_uuid(), *position));
        let mut pending = Vec::new();
        for (position, event) in by_org {
            // The heads' read returns one row per org asked for; were one missing, its
            // events would stay unsealed, so the watermark must not pass them.
            let Some(head) = self.heads.get(&event.org_id.as_uuid()) else {
                return Some((Vec::new(), self.watermark));
            };
            if *position > head.position {
                pending.push((head.clone(), *position, event.clone()));
            }
        }
        Some((pending, watermark))
    }
}

/// Reads one sealer pass in `tx`: takes the sealers' lock, reads the watermark and the
/// horizon, the events between them, and their orgs' chain heads; with `explain`, also
/// the plans of those two reads.
async fn read_seal_pass(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    limit: i64,
    explain: bool,
) -> Result<(PassScope, [Vec<String>; 2]), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sable.audit_sealer'))")
        .execute(&mut **tx)
        .await?;
    // Read first and bound as values: under row-level security a subquery for the
    // watermark keeps the planner from the index. The horizon: every transaction below it
    // has ended, so every later snapshot sees all of their events that committed.
    let (watermark_xid, watermark_id, horizon, seqscan, indexscan, indexonlyscan): (
        i64,
        Uuid,
        i64,
        String,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT watermark_xid, watermark_id, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
                 current_setting('enable_seqscan'), current_setting('enable_indexscan'), \
                 current_setting('enable_indexonlyscan') \
             FROM audit_sealer_state WHERE id = 1",
    )
    .fetch_one(&mut **tx)
    .await?;
    // The planner's JIT compiles the pass's reads afresh each pass, for far longer than
    // they run. And the events are read through the BRIN index of `xid` only: without
    // fresh statistics the planner prefers to read the whole table, or to walk the whole
    // primary key `(org_id, xid, id)` for its `xid` condition (every event, each pass).
    sqlx::query(
        "SELECT set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true), \
             set_config('enable_indexscan', 'off', true), set_config('enable_indexonlyscan', 'off', true)",
    )
    .execute(&mut **tx)
    .await?;
    let mut plans: [Vec<String>; 2] = Default::default();
    let events_sql = pass_events_sql();
    let watermark = (watermark_xid, watermark_id);
    if explain {
        plans[0] = explain_lines(
            events_query(
                &format!("EXPLAIN (ANALYZE) {events_sql}"),
                watermark,
                horizon,
                limit,
            )
            .fetch_all(&mut **tx)
            .await?,
        );
    }
    let rows: Vec<PositionedRow> = events_query(&events_sql, watermark, horizon, limit)
        .fetch_all(&mut **tx)
        .await?;
    let full = i64::try_from(rows.len()).is_ok_and(|read| read >= limit);
    // The heads' reads want their index scans back.
    sqlx::query(
        "SELECT set_config('enable_seqscan', $1, true), set_config('enable_indexscan', $2, true), \
             set_config('enable_indexonlyscan', $3, true)",
    )
    .bind(seqscan)
    .bind(indexscan)
    .bind(indexonlyscan)
    .execute(&mut **tx)
    .await?;
    let events: Vec<(PgPosition, AuditRecord)> = rows
        .into_iter()
        .map(PositionedRow::into_positioned)
        .collect();
    let mut orgs: Vec<Uuid> = events
        .iter()
        .map(|(_, event)| event.org_id.as_uuid())
        .collect();
    orgs.sort_unstable();
    orgs.dedup();
    let mut heads = HashMap::new();
    if !orgs.is_empty() {
        if explain {
            plans[1] = explain_lines(
                heads_query(&format!("EXPLAIN (ANALYZE) {PASS_HEADS_SQL}"), &orgs)
                    .fetch_all(&mut **tx)
                    .await?,
            );
        }
        let rows: Vec<ChainHeadRow> = heads_query(PASS_HEADS_SQL, &orgs)
            .fetch_all(&mut **tx)
            .await?;
        heads = rows
            .into_iter()
            .map(|row| {
                let head = ChainHead {
                    seq: row.head_seq,
                    hash: row.head_hash,
                    position: (row.head_xid, row.head_id),
                };
                (row.org_id, head)
            })
            .collect();
    }
    let scope = PassScope {
        watermark,
        horizon,
        full,
        events,
        heads,
    };
    Ok((scope, plans))
}

/// `sql` (the pass's read of its events, or a statement around it) with its binds.
fn events_query<'q, O>(
    sql: &'q str,
    watermark: PgPosition,
    horizon: i64,
    limit: i64,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql)
        .bind(watermark.0)
        .bind(watermark.1)
        .bind(horizon)
        .bind(limit)
}

/// `sql` (the heads' read, or a statement around it) with its binds.
fn heads_query<'q, O>(
    sql: &'q str,
    orgs: &[Uuid],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql)
        .bind(orgs.to_vec())
        .bind(GENESIS.to_vec())
        .bind(PG_START.0)
        .bind(PG_START.1)
}

fn explain_lines(rows: Vec<(String,)>) -> Vec<String> {
    rows.into_iter().map(|(line,)| line).collect()
}

/// One sealer pass's read of the first events past the watermark and below the horizon,
/// every org's, in position order. `e.xid >= $1` is the BRIN index's condition (the
/// row comparison is exact but, under row-level security, only a filter). Binds: the
/// watermark (xid, id), the horizon, the limit.
fn pass_events_sql() -> String {
    format!(
        "SELECT e.xid, NULL::bigint AS seq, {EVENT_SELECT} FROM audit_events e \
         WHERE e.xid >= $1 AND (e.xid, e.id) > ($1, $2) AND e.xid < $3 \
         ORDER BY e.xid, e.id LIMIT $4"
    )
}

/// The chain heads of the orgs of a sealer pass: each org's newest seal, else its
/// retention checkpoint, else the start. Binds: the orgs, the genesis hash, the start
/// position (xid, id).
const PASS_HEADS_SQL: &str = "SELECT o.org_id, coalesce(s.last_seq, k.through_seq, 0) AS head_seq, \
         coalesce(substr(s.hashes, length(s.hashes) - 31), k.hash, $2) AS head_hash, \
         coalesce(s.through_xid, k.through_xid, $3) AS head_xid, \
         coalesce(s.through_id, k.through_id, $4) AS head_id \
     FROM unnest($1::uuid[]) AS o(org_id) \
     LEFT JOIN LATERAL (SELECT last_seq, hashes, through_xid, through_id FROM audit_seals s \
         WHERE s.org_id = o.org_id ORDER BY s.first_seq DESC LIMIT 1) s ON true \
     LEFT JOIN audit_checkpoints k ON k.org_id = o.org_id";

/// Appends the seals of one sealer pass.
async fn insert_pg_seals(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    seals: &[NewSeal<PgPosition>],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_seals (org_id, first_seq, last_seq, after_xid, after_id, through_xid, through_id, \
             newest_time, hashes) \
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::uuid[], $6::bigint[], \
             $7::uuid[], $8::timestamptz[], $9::bytea[])",
    )
    .bind(seals.iter().map(|seal| seal.org_id).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.first_seq).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.last_seq).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.after.0).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.after.1).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.through.0).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.through.1).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.newest_time).collect::<Vec<_>>())
    .bind(seals.iter().map(|seal| seal.hashes.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes audit events (a JSON array from `audit_json`) inside the caller's transaction.
pub(crate) async fn pg_write_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events_json: &str,
) -> Result<(), StoreError> {
    if events_json != "[]" {
        sqlx::query(&pg_insert_events("$1", None, &[]))
            .bind(events_json)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The event that records a retention drop.
pub(crate) fn retention_event(
    org_id: OrgId,
    through_seq: i64,
    dropped: u64,
    before: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent::new(
        org_id,
        &Actor::system(),
        "audit.retention",
        "audit",
        org_id.to_string(),
    )
    .severity(Severity::Notice)
    .details(serde_json::json!({
        "through_seq": through_seq,
        "dropped": dropped,
        "before": before.to_rfc3339(),
    }))
}

/// Where an org's chain stands: its newest sequence number and hash, and the position
/// of its newest sealed event (`P`, the backend's position: `(xid, id)` or a row number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead<P> {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub position: P,
}

impl<P> ChainHead<P> {
    /// An org that has sealed nothing: sequence 0, the genesis hash, before every position.
    pub(crate) fn start(position: P) -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_vec(),
            position,
        }
    }
}

/// A seal the sealer appends: the org's events after `after` through `through`, one hash
/// each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewSeal<P> {
    pub org_id: Uuid,
    pub first_seq: i64,
    pub last_seq: i64,
    pub after: P,
    pub through: P,
    pub newest_time: DateTime<Utc>,
    pub hashes: Vec<u8>,
}

/// Chains `events` (the org's next events, in position order) onto its `head`; `None`
/// when there are none.
pub(crate) fn seal_events<P: Clone>(
    org_id: Uuid,
    head: ChainHead<P>,
    events: &[(P, AuditRecord)],
) -> Option<NewSeal<P>> {
    let (through, _) = events.last()?;
    let newest_time = events.iter().map(|(_, event)| event.time).max()?;
    let mut hash = head.hash;
    let mut hashes = Vec::with_capacity(32 * events.len());
    for (_, event) in events {
        hash = chain_hash(&hash, event);
        hashes.extend_from_slice(&hash);
    }
    Some(NewSeal {
        org_id,
        first_seq: head.seq + 1,
        last_seq: head.seq + events.len() as i64,
        after: head.position,
        through: through.clone(),
        newest_time,
        hashes,
    })
}

/// Seals one pass's events: `pending` holds each event with its position and its org's
/// head, grouped by org, each org's events in position order.
pub(crate) fn seal_pass<P: Clone>(
    pending: Vec<(ChainHead<P>, P, AuditRecord)>,
) -> (Vec<NewSeal<P>>, SealReport) {
    let mut report = SealReport::default();
    let mut seals = Vec::new();
    for org in pending.chunk_by(|a, b| a.2.org_id == b.2.org_id) {
        let head = org[0].0.clone();
        let events: Vec<(P, AuditRecord)> = org
            .iter()
            .map(|(_, position, event)| (position.clone(), event.clone()))
            .collect();
        for (_, event) in &events {
            report.sealed += 1;
            *report.actions.entry(event.action.clone()).or_insert(0) += 1;
            report.oldest_unsealed = Some(
                report
                    .oldest_unsealed
                    .map_or(event.time, |oldest| oldest.min(event.time)),
            );
        }
        seals.extend(seal_events(org[0].2.org_id.as_uuid(), head, &events));
    }
    (seals, report)
}

/// A stored seal read back for verification.
#[derive(Debug, Clone)]
pub(crate) struct StoredSeal<P> {
    pub first_seq: i64,
    pub last_seq: i64,
    pub after: P,
    pub through: P,
    pub hashes: Vec<u8>,
}

/// Checks one seal against the chain so far (`head`) and the events now stored in its
/// range (in position order); `Err` names the first broken sequence number.
pub(crate) fn verify_seal<P: PartialEq + Clone>(
    head: &mut ChainHead<P>,
    seal: &StoredSeal<P>,
    events: Vec<AuditRecord>,
) -> Result<u64, AuditVerification> {
    let broken = |seq: i64, reason: &str| AuditVerification::Broken {
        seq,
        reason: reason.to_owned(),
    };
    if seal.first_seq != head.seq + 1 {
        return Err(broken(
            head.seq + 1,
            "the sequence has a gap: this link is missing",
        ));
    }
    let count = seal.last_seq - seal.first_seq + 1;
    if count < 1 || seal.hashes.len() as i64 != 32 * count {
        return Err(broken(seal.first_seq, "the seal was altered"));
    }
    if seal.after != head.position {
        return Err(broken(
            seal.first_seq,
            "the seal does not start where the previous one ended",
        ));
    }
    let stored_events = events.len() as i64;
    let mut events = events.into_iter();
    let links = seal
        .hashes
        .chunks(32)
        .zip(seal.first_seq..)
        .map(|(hash, seq)| (seq, hash.to_vec(), events.next()));
    let mut previous = (head.seq, std::mem::take(&mut head.hash));
    let checked = verify_links(&mut previous, links).map_err(|broken| match broken {
        AuditVerification::Broken { seq, .. } if stored_events != count => {
            AuditVerification::Broken {
                seq,
                reason: "an event was deleted from or added to the sealed range here".to_owned(),
            }
        }
        other => other,
    })?;
    if stored_events > count {
        return Err(broken(
            seal.last_seq,
            "an event was added to the sealed range",
        ));
    }
    *head = ChainHead {
        seq: previous.0,
        hash: previous.1,
        position: seal.through.clone(),
    };
    Ok(checked)
}

/// What each action records: the builders both backends use, so the two write the same
/// events.
pub(crate) mod record {
    use serde_json::json;

    use super::{Actor, AuditEvent, AuditOutcome, Severity};
    use crate::{
        ApprovalDecision, FinishTurn, NewApproval, NewMessage, NewToolCall, ProviderCallRecord,
        RunnableTurn, ToolCallResult, TurnOutcome,
    };

    /// `message.accepted`, with whether the idempotency key was new.
    pub(crate) fn message_accepted(message: &NewMessage, created: bool) -> AuditEvent {
        // The subject is the turn that answers it, filled in where its id is known.
        AuditEvent::new(message.org_id, &message.actor, "message.accepted", "turn", "")
        .trace(message.trace_parent.as_deref())
        .details(json!({
            "channel": message.channel.as_str(),
            "agent": message.agent.as_str(),
            "binding_rule": message.binding_rule,
            "idempotency": if message.idempotency_key.is_none() { "none" } else if created { "new" } else { "repeat" },
        }))
    }

    /// `turn.started`, an attempt begun by a worker (the Postgres statement builds the
    /// same event in SQL).
    pub(crate) fn turn_started(turn: &RunnableTurn, attempt: i32, worker: &str) -> AuditEvent {
        AuditEvent::of_turn(turn, "turn.started", "turn", turn.id.to_string()).details(json!({
            "attempt": attempt,
            "agent": turn.agent_id,
            "worker": worker,
        }))
    }

    /// `turn.finished` or `turn.failed`, then one `provider.call` per call.
    pub(crate) fn turn_ended(finish: &FinishTurn<'_>) -> Vec<AuditEvent> {
        let turn = finish.turn;
        let usage = finish.usage.unwrap_or_default();
        let mut details = json!({
            "attempt": finish.attempt,
            "agent": turn.agent_id,
            "channel": turn.channel,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "profile": finish.route.as_ref().map(|route| route.profile.as_str()),
        });
        let event = match &finish.outcome {
            TurnOutcome::Replied { .. } => {
                AuditEvent::of_turn(turn, "turn.finished", "turn", turn.id.to_string())
            }
            TurnOutcome::Failed { code, .. } => {
                details["error_code"] = json!(code);
                AuditEvent::of_turn(turn, "turn.failed", "turn", turn.id.to_string())
                    .outcome(AuditOutcome::Error)
                    .severity(Severity::Warning)
            }
        };
        std::iter::once(event.details(details))
            .chain(provider_calls(turn, &finish.provider_calls))
            .collect()
    }

    /// One `provider.call` per call, subject the model profile.
    pub(crate) fn provider_calls(
        turn: &RunnableTurn,
        calls: &[ProviderCallRecord],
    ) -> Vec<AuditEvent> {
        calls
            .iter()
            .map(|call| {
                let outcome = if call.outcome == "ok" {
                    AuditOutcome::Ok
                } else {
                    AuditOutcome::Error
                };
                AuditEvent::of_turn(turn, "provider.call", "model_profile", call.profile.clone())
                    .outcome(outcome)
                    .details(json!({
                        "attempt": call.turn_attempt,
                        "purpose": call.purpose,
                        "provider": call.provider,
                        "provider_kind": call.provider_kind,
                        "model": call.model,
                        "outcome": call.outcome,
                        "retry_number": call.retry_number,
                        "failover_reason": call.failover_reason,
                        "started_at": call.started_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                        "duration_ms": call.duration_ms,
                        "input_tokens": call.input_tokens,
                        "output_tokens": call.output_tokens,
                    }))
            })
            .collect()
    }

    /// One `tool.started` per call of a round.
    pub(crate) fn tool_round(
        turn: &RunnableTurn,
        attempt: i32,
        round: i32,
        calls: &[NewToolCall],
    ) -> Vec<AuditEvent> {
        calls
            .iter()
            .enumerate()
            .map(|(position, call)| {
                AuditEvent::of_turn(turn, "tool.started", "tool", call.tool.clone()).details(
                    tool_details(&call.tool, &call.call_id, attempt, round, position as i32),
                )
            })
            .collect()
    }

    /// `tool.completed`, `tool.failed` or `tool.rejected` (an unknown tool, invalid
    /// arguments, a refusal, a denial).
    pub(crate) fn tool_finished(
        turn: &RunnableTurn,
        attempt: i32,
        result: &ToolCallResult,
    ) -> AuditEvent {
        let code = result.error_code.as_deref();
        let (action, outcome) = match (result.status.as_str(), code) {
            ("ok", _) => ("tool.completed", AuditOutcome::Ok),
            ("denied", _) => ("tool.rejected", AuditOutcome::Denied),
            (_, Some("unknown_tool" | "invalid_arguments" | "refused")) => {
                ("tool.rejected", AuditOutcome::Rejected)
            }
            _ => ("tool.failed", AuditOutcome::Error),
        };
        let mut details = tool_details(
            &result.tool,
            &result.call_id,
            attempt,
            result.round,
            result.position,
        );
        details["error_code"] = json!(code);
        details["duration_ms"] = json!(result.duration_ms);
        AuditEvent::of_turn(turn, action, "tool", result.tool.clone())
            .outcome(outcome)
            .details(details)
    }

    fn tool_details(
        tool: &str,
        call_id: &str,
        attempt: i32,
        round: i32,
        position: i32,
    ) -> serde_json::Value {
        let (source, server) = match tool.strip_prefix("mcp__") {
            Some(rest) => ("mcp", rest.split_once("__").map(|(server, _)| server)),
            None if tool.starts_with("skill") => ("skill", None),
            None => ("builtin", None),
        };
        json!({
            "call_id": call_id,
            "attempt": attempt,
            "round": round,
            "position": position,
            "source": source,
            "server": server,
        })
    }

    /// A change to the org's configuration or keys, by `actor`.
    pub(crate) fn change(
        org_id: sable_core::OrgId,
        actor: &Actor,
        action: &'static str,
        subject_kind: &'static str,
        subject_id: impl Into<String>,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent::new(org_id, actor, action, subject_kind, subject_id)
            .severity(Severity::Notice)
            .details(details)
    }

    /// `auth.failed`: a presented key that did not authenticate (its prefix only), filed
    /// under the key's org when the prefix names one, under the platform's otherwise.
    pub(crate) fn authentication_failed(prefix: Option<&str>, source: Option<&str>) -> AuditEvent {
        AuditEvent::new(
            super::platform_org(),
            &Actor::named("anonymous", None),
            "auth.failed",
            "api_key",
            prefix.unwrap_or(""),
        )
        .outcome(AuditOutcome::Denied)
        .severity(Severity::Warning)
        .details(json!({ "key_prefix": prefix, "source": source }))
    }

    /// `approval.requested`, subject the approval.
    pub(crate) fn approval_requested(
        turn: &RunnableTurn,
        attempt: i32,
        approval_id: uuid::Uuid,
        approval: &NewApproval,
    ) -> AuditEvent {
        AuditEvent::of_turn(
            turn,
            "approval.requested",
            "approval",
            approval_id.to_string(),
        )
        .severity(Severity::Notice)
        .details(json!({
            "tool": approval.tool,
            "attempt": attempt,
            "round": approval.round,
            "position": approval.position,
            "expires_in_s": approval.expires_in.as_secs(),
        }))
    }

    /// `approval.granted` or `approval.denied` by the decider.
    pub(crate) fn approval_decided(
        decision: &ApprovalDecision,
        turn_id: uuid::Uuid,
        session_id: uuid::Uuid,
        tool: &str,
    ) -> AuditEvent {
        let (action, outcome) = if decision.approve {
            ("approval.granted", AuditOutcome::Ok)
        } else {
            ("approval.denied", AuditOutcome::Denied)
        };
        AuditEvent::new(
            decision.org_id,
            &decision.actor,
            action,
            "approval",
            decision.approval_id.to_string(),
        )
        .outcome(outcome)
        .severity(Severity::Notice)
        .in_turn(turn_id.into(), session_id.into())
        .details(json!({
            "tool": tool,
            "scope": decision.scope,
            "commented": decision.comment.is_some(),
        }))
    }

    /// `approval.expired`, by the deployment.
    pub(crate) fn approval_expired(
        org_id: uuid::Uuid,
        approval_id: uuid::Uuid,
        turn_id: uuid::Uuid,
        session_id: uuid::Uuid,
        tool: &str,
    ) -> AuditEvent {
        AuditEvent::new(
            org_id.into(),
            &Actor::system(),
            "approval.expired",
            "approval",
            approval_id.to_string(),
        )
        .outcome(AuditOutcome::Denied)
        .severity(Severity::Notice)
        .in_turn(turn_id.into(), session_id.into())
        .details(json!({ "tool": tool }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            org_id: OrgId::new(),
            seq: None,
            time: Utc::now(),
            actor: "system".to_owned(),
            actor_name: None,
            action: "turn.finished".to_owned(),
            subject_kind: "turn".to_owned(),
            subject_id: subject.to_owned(),
            outcome: "ok".to_owned(),
            severity: "info".to_owned(),
            request_id: None,
            trace_id: None,
            turn_id: None,
            session_id: None,
            details: "{}".to_owned(),
            position: 7_123_456,
        }
    }

    #[test]
    fn a_trace_id_is_read_from_a_traceparent_and_nothing_else() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(Some(parent)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of(Some("garbage")), None);
        assert_eq!(trace_id_of(None), None);
    }

    #[test]
    fn a_cursor_survives_its_text_form_and_refuses_garbage() {
        let cursor = AuditCursor::of(&record("a"));
        let round = AuditCursor::decode(&cursor.encode()).unwrap();
        assert_eq!(round, cursor);
        assert_eq!(round.position, 7_123_456);
        for bad in [
            "",
            "12",
            "x_y",
            "12_not-a-uuid",
            "1.5_00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(AuditCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn action_families_become_like_patterns_and_wildcards_in_names_are_literal() {
        let filter = |action: &str| AuditFilter {
            action: Some(action.to_owned()),
            ..AuditFilter::default()
        };
        assert_eq!(filter("tool.*").action_pattern().unwrap(), "tool.%");
        assert_eq!(filter("tool_x").action_pattern().unwrap(), "tool\\_x");
    }

    #[test]
    fn a_seal_breaks_at_the_first_altered_deleted_or_added_event_and_at_a_gap() {
        let org_id = OrgId::new();
        let events: Vec<(i64, AuditRecord)> = ["a", "b", "c", "d"]
            .iter()
            .zip(1..)
            .map(|(subject, position)| {
                let event = AuditRecord {
                    org_id,
                    ..record(subject)
                };
                (position, event)
            })
            .collect();
        let new = seal_events(org_id.as_uuid(), ChainHead::start(0), &events).unwrap();
        assert_eq!((new.first_seq, new.last_seq, new.through), (1, 4, 4));
        let seal = StoredSeal {
            first_seq: new.first_seq,
            last_seq: new.last_seq,
            after: new.after,
            through: new.through,
            hashes: new.hashes.clone(),
        };
        let verify = |alter: &dyn Fn(&mut Vec<AuditRecord>)| {
            let mut stored: Vec<AuditRecord> = events.iter().map(|(_, e)| e.clone()).collect();
            alter(&mut stored);
            verify_seal(&mut ChainHead::start(0), &seal, stored)
        };
        assert_eq!(verify(&|_| {}), Ok(4));
        let at = |result: Result<u64, AuditVerification>| match result {
            Err(AuditVerification::Broken { seq, .. }) => Some(seq),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            at(verify(&|stored| stored[2].outcome = "error".to_owned())),
            Some(3)
        );
        assert_eq!(at(verify(&|stored| drop(stored.remove(1)))), Some(2));
        assert_eq!(at(verify(&|stored| drop(stored.pop()))), Some(4));
        let extra = record("extra");
        assert_eq!(
            at(verify(&|stored| stored.insert(0, extra.clone()))),
            Some(1)
        );

        // The next seal must start where this one ended, at the next number.
        let mut head = ChainHead::start(0);
        let stored: Vec<AuditRecord> = events.iter().map(|(_, e)| e.clone()).collect();
        verify_seal(&mut head, &seal, stored).unwrap();
        assert_eq!(head.seq, 4);
        let fifth = AuditRecord {
            org_id,
            ..record("e")
        };
        let later = seal_events(org_id.as_uuid(), head.clone(), &[(9, fifth.clone())]).unwrap();
        let stored_later = |first_seq, after| StoredSeal {
            first_seq,
            last_seq: first_seq,
            after,
            through: 9,
            hashes: later.hashes.clone(),
        };
        assert_eq!(
            verify_seal(&mut head.clone(), &stored_later(5, 4), vec![fifth]),
            Ok(1)
        );
        assert_eq!(
            at(verify_seal(&mut head.clone(), &stored_later(6, 4), vec![])),
            Some(5)
        );
        assert_eq!(
            at(verify_seal(&mut head.clone(), &stored_later(5, 3), vec![])),
            Some(5)
        );
    }
}
