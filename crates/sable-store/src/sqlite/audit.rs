//! The audit trail in SQLite: events written inside the action's transaction, the sealer,
//! verification and retention (see the crate's `audit` module for the rules).

use chrono::{DateTime, Utc};
use sable_core::OrgId;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::{begin_write, earlier_by, stored_now, stored_time};
use crate::StoreError;
use crate::audit::{
    AuditEvent, AuditFilter, AuditRecord, AuditVerification, GENESIS, SEAL_LOOKBEHIND, SealReport,
    VERIFY_PAGE, events_json, link_events, retention_event, unique_orgs, verify_links,
};

/// Writes `events` on `connection`, stamped `now` (inside the caller's transaction).
pub(super) async fn insert_events(
    connection: &mut SqliteConnection,
    events: &[AuditEvent],
    now: &str,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, time, actor, actor_name, action, subject_kind, subject_id, outcome, \
             severity, request_id, trace_id, turn_id, session_id, details) \
         SELECT e.value ->> '$.id', e.value ->> '$.org_id', $2, e.value ->> '$.actor', e.value ->> '$.actor_name', \
             e.value ->> '$.action', e.value ->> '$.subject_kind', e.value ->> '$.subject_id', \
             e.value ->> '$.outcome', e.value ->> '$.severity', e.value ->> '$.request_id', \
             e.value ->> '$.trace_id', e.value ->> '$.turn_id', e.value ->> '$.session_id', \
             coalesce(e.value -> '$.details', '{}') \
         FROM json_each($1) AS e",
    )
    .bind(events_json(true, events))
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: Hyphenated,
    org_id: Hyphenated,
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
    turn_id: Option<Hyphenated>,
    session_id: Option<Hyphenated>,
    details: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id.into_uuid(),
            org_id: row.org_id.into_uuid().into(),
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
            turn_id: row.turn_id.map(Hyphenated::into_uuid),
            session_id: row.session_id.map(Hyphenated::into_uuid),
            details: row.details,
        }
    }
}

const RECORD_COLUMNS: &str = "e.id, e.org_id, c.seq, e.time, e.actor, e.actor_name, e.action, e.subject_kind, \
     e.subject_id, e.outcome, e.severity, e.request_id, e.trace_id, e.turn_id, e.session_id, e.details";

pub(crate) async fn record_audit(
    pool: &SqlitePool,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut connection = pool.acquire().await?;
    insert_events(&mut connection, events, &stored_now()).await
}

pub(crate) async fn audit_events(
    pool: &SqlitePool,
    org_id: OrgId,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let hyphenated = |id: Option<Uuid>| id.map(|id| id.hyphenated().to_string());
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM audit_events e LEFT JOIN audit_chain c ON c.event_id = e.id \
         WHERE e.org_id = $1 AND ($2 IS NULL OR e.action LIKE $2 ESCAPE '\\') AND ($3 IS NULL OR e.actor = $3) \
           AND ($4 IS NULL OR e.subject_id = $4 OR e.subject_kind || ':' || e.subject_id = $4) \
           AND ($5 IS NULL OR e.outcome = $5) AND ($6 IS NULL OR e.turn_id = $6) \
           AND ($7 IS NULL OR e.session_id = $7) AND ($8 IS NULL OR e.time >= $8) \
           AND ($9 IS NULL OR e.time < $9) \
           AND ($10 IS NULL OR e.time < $10 OR (e.time = $10 AND e.id < $11)) \
         ORDER BY e.time DESC, e.id DESC LIMIT $12"
    );
    let rows: Vec<AuditRow> = sqlx::query_as(&sql)
        .bind(org_id.as_uuid().hyphenated())
        .bind(filter.action_pattern())
        .bind(&filter.actor)
        .bind(&filter.subject)
        .bind(&filter.outcome)
        .bind(hyphenated(filter.turn_id))
        .bind(hyphenated(filter.session_id))
        .bind(filter.since.map(stored_time))
        .bind(filter.until.map(stored_time))
        .bind(filter.before.map(|cursor| stored_time(cursor.time)))
        .bind(hyphenated(filter.before.map(|cursor| cursor.id)))
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}

pub(crate) async fn seal_audit(pool: &SqlitePool, limit: i64) -> Result<SealReport, StoreError> {
    let mut tx = begin_write(pool).await?;
    let newest: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT max(event_time) FROM audit_chain")
            .fetch_optional(&mut *tx)
            .await?;
    let low = newest.and_then(|(time,)| time).map_or_else(
        || "0000".to_owned(),
        |time| stored_time(earlier_by(time, SEAL_LOOKBEHIND)),
    );
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM audit_events e LEFT JOIN audit_chain c ON c.event_id = e.id \
         WHERE c.event_id IS NULL AND e.time >= $2 ORDER BY e.time, e.id LIMIT $1"
    );
    let events: Vec<AuditRecord> = sqlx::query_as::<_, AuditRow>(&sql)
        .bind(limit)
        .bind(low)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(AuditRecord::from)
        .collect();
    let Some(oldest) = events.first().map(|event| event.time) else {
        return Ok(SealReport::default());
    };
    let mut heads = Vec::new();
    for org in unique_orgs(&events) {
        heads.push(chain_head(&mut tx, org).await?);
    }
    let links = link_events(heads, &events);
    let now = stored_now();
    for link in &links {
        sqlx::query(
            "INSERT INTO audit_chain (org_id, seq, event_id, event_time, hash, sealed_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(link.org_id.hyphenated())
        .bind(link.seq)
        .bind(link.event_id.hyphenated())
        .bind(stored_time(link.event_time))
        .bind(&link.hash)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(SealReport::of(&events, oldest))
}

/// The org's newest link, or its checkpoint, or the start of a chain.
async fn chain_head(
    connection: &mut SqliteConnection,
    org: Uuid,
) -> Result<(Uuid, i64, Vec<u8>), StoreError> {
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, hash FROM audit_chain WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(org.hyphenated())
    .fetch_optional(&mut *connection)
    .await?;
    let head = match head {
        Some(head) => Some(head),
        None => checkpoint(&mut *connection, org).await?,
    };
    let (seq, hash) = head.unwrap_or((0, GENESIS.to_vec()));
    Ok((org, seq, hash))
}

async fn checkpoint(
    connection: &mut SqliteConnection,
    org: Uuid,
) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT through_seq, hash FROM audit_checkpoints WHERE org_id = $1")
            .bind(org.hyphenated())
            .fetch_optional(&mut *connection)
            .await?,
    )
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    link_seq: i64,
    link_hash: Vec<u8>,
    id: Option<Hyphenated>,
    org_id: Option<Hyphenated>,
    time: Option<DateTime<Utc>>,
    actor: Option<String>,
    actor_name: Option<String>,
    action: Option<String>,
    subject_kind: Option<String>,
    subject_id: Option<String>,
    outcome: Option<String>,
    severity: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
    turn_id: Option<Hyphenated>,
    session_id: Option<Hyphenated>,
    details: Option<String>,
}

impl LinkRow {
    fn into_link(self) -> (i64, Vec<u8>, Option<AuditRecord>) {
        let event = (|| {
            Some(AuditRecord {
                id: self.id?.into_uuid(),
                org_id: self.org_id?.into_uuid().into(),
                seq: None,
                time: self.time?,
                actor: self.actor?,
                actor_name: self.actor_name,
                action: self.action?,
                subject_kind: self.subject_kind?,
                subject_id: self.subject_id?,
                outcome: self.outcome?,
                severity: self.severity?,
                request_id: self.request_id,
                trace_id: self.trace_id,
                turn_id: self.turn_id.map(Hyphenated::into_uuid),
                session_id: self.session_id.map(Hyphenated::into_uuid),
                details: self.details?,
            })
        })();
        (self.link_seq, self.link_hash, event)
    }
}

pub(crate) async fn verify_audit(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<AuditVerification, StoreError> {
    let org = org_id.as_uuid();
    let mut connection = pool.acquire().await?;
    let start = checkpoint(&mut connection, org).await?;
    let dropped = start.as_ref().map_or(0, |(seq, _)| *seq);
    let mut previous = start.unwrap_or((0, GENESIS.to_vec()));
    let mut events = 0;
    loop {
        let page: Vec<LinkRow> = sqlx::query_as(
            "SELECT c.seq AS link_seq, c.hash AS link_hash, e.id, e.org_id, e.time, e.actor, e.actor_name, \
                 e.action, e.subject_kind, e.subject_id, e.outcome, e.severity, e.request_id, e.trace_id, \
                 e.turn_id, e.session_id, e.details \
             FROM audit_chain c LEFT JOIN audit_events e ON e.id = c.event_id \
             WHERE c.org_id = $1 AND c.seq > $2 ORDER BY c.seq LIMIT $3",
        )
        .bind(org.hyphenated())
        .bind(previous.0)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *connection)
        .await?;
        let done = (page.len() as i64) < VERIFY_PAGE;
        match verify_links(&mut previous, page.into_iter().map(LinkRow::into_link)) {
            Ok(checked) => events += checked,
            Err(broken) => return Ok(broken),
        }
        if done {
            break;
        }
    }
    let (unsealed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_events e WHERE e.org_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)",
    )
    .bind(org.hyphenated())
    .fetch_one(&mut *connection)
    .await?;
    Ok(AuditVerification::Intact {
        events,
        through_seq: previous.0,
        dropped,
        unsealed,
    })
}

pub(crate) async fn drop_sealed_audit(
    pool: &SqlitePool,
    org_id: OrgId,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let org = org_id.as_uuid().hyphenated();
    let mut tx = begin_write(pool).await?;
    let end: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, hash FROM audit_chain WHERE org_id = $1 AND seq = \
             coalesce((SELECT min(seq) - 1 FROM audit_chain WHERE org_id = $1 AND event_time >= $2), \
                      (SELECT max(seq) FROM audit_chain WHERE org_id = $1))",
    )
    .bind(org)
    .bind(stored_time(before))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((through_seq, hash)) = end else {
        return Ok(0);
    };
    sqlx::query("INSERT INTO audit_retention_window (active) VALUES (1)")
        .execute(&mut *tx)
        .await?;
    let dropped = sqlx::query(
        "DELETE FROM audit_events WHERE id IN \
             (SELECT event_id FROM audit_chain WHERE org_id = $1 AND seq <= $2)",
    )
    .bind(org)
    .bind(through_seq)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM audit_chain WHERE org_id = $1 AND seq <= $2")
        .bind(org)
        .bind(through_seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_retention_window")
        .execute(&mut *tx)
        .await?;
    let now = stored_now();
    sqlx::query(
        "INSERT INTO audit_checkpoints (org_id, through_seq, hash, dropped, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (org_id) DO UPDATE SET through_seq = $2, hash = $3, \
             dropped = audit_checkpoints.dropped + $4, updated_at = $5",
    )
    .bind(org)
    .bind(through_seq)
    .bind(&hash)
    .bind(dropped as i64)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let event = retention_event(org_id, through_seq, dropped, before);
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(dropped)
}
