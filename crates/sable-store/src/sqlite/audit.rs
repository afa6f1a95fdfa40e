//! The audit trail in SQLite: events written inside the action's transaction, the sealer,
//! verification and retention (see the crate's `audit` module for the rules).

use chrono::{DateTime, Utc};
use sable_core::OrgId;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::{begin_write, stored_now, stored_time};
use crate::StoreError;
use crate::audit::{
    AuditEvent, AuditFilter, AuditRecord, AuditVerification, ChainHead, NewSeal, SealReport,
    StoredSeal, VERIFY_PAGE, events_json, retention_event, seal_pass, verify_seal,
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
    #[sqlx(default)]
    position: i64,
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
            position: row.position,
        }
    }
}

/// The columns of a stored event, for `FROM audit_events e`.
const EVENT_SELECT: &str = "e.id, e.org_id, e.time, e.actor, e.actor_name, e.action, e.subject_kind, \
     e.subject_id, e.outcome, e.severity, e.request_id, e.trace_id, e.turn_id, e.session_id, e.details";

/// An event with its position (the row number commit order gave it).
#[derive(sqlx::FromRow)]
struct PositionedRow {
    pos: i64,
    #[sqlx(flatten)]
    event: AuditRow,
}

#[derive(sqlx::FromRow)]
struct SealRow {
    first_seq: i64,
    last_seq: i64,
    after_pos: i64,
    through_pos: i64,
    hashes: Vec<u8>,
}

impl From<SealRow> for StoredSeal<i64> {
    fn from(row: SealRow) -> Self {
        Self {
            first_seq: row.first_seq,
            last_seq: row.last_seq,
            after: row.after_pos,
            through: row.through_pos,
            hashes: row.hashes,
        }
    }
}

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
        "SELECT p.*, ( \
             SELECT s.first_seq + (SELECT count(*) FROM audit_events x WHERE x.org_id = p.org_id \
                 AND x.pos > s.after_pos AND x.pos < p.pos) \
             FROM audit_seals s WHERE s.org_id = p.org_id AND s.through_pos >= p.pos \
             ORDER BY s.through_pos LIMIT 1 \
         ) AS seq \
         FROM (SELECT e.pos, e.pos AS position, {EVENT_SELECT} FROM audit_events e \
             WHERE e.org_id = $1 AND ($2 IS NULL OR e.action LIKE $2 ESCAPE '\\') AND ($3 IS NULL OR e.actor = $3) \
               AND ($4 IS NULL OR e.subject_id = $4 OR e.subject_kind || ':' || e.subject_id = $4) \
               AND ($5 IS NULL OR e.outcome = $5) AND ($6 IS NULL OR e.turn_id = $6) \
               AND ($7 IS NULL OR e.session_id = $7) AND ($8 IS NULL OR e.time >= $8) \
               AND ($9 IS NULL OR e.time < $9) \
               AND ($10 IS NULL OR e.pos < $10) \
             ORDER BY e.pos DESC LIMIT $11) p \
         ORDER BY p.pos DESC"
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
        .bind(filter.before.map(|cursor| cursor.position))
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}

/// Seals up to `limit` events past the newest sealed position, in position order: with
/// one writer at a time, every event below a committed one is committed too, so none can
/// appear behind a seal later.
pub(crate) async fn seal_audit(pool: &SqlitePool, limit: i64) -> Result<SealReport, StoreError> {
    let mut tx = begin_write(pool).await?;
    let (sealed_through,): (i64,) = sqlx::query_as(
        "SELECT max(coalesce((SELECT max(through_pos) FROM audit_seals), 0), \
                    coalesce((SELECT max(through_pos) FROM audit_checkpoints), 0))",
    )
    .fetch_one(&mut *tx)
    .await?;
    let sql = format!(
        "SELECT e.pos, NULL AS seq, {EVENT_SELECT} FROM audit_events e WHERE e.pos > $2 \
         ORDER BY e.pos LIMIT $1"
    );
    let mut rows: Vec<PositionedRow> = sqlx::query_as(&sql)
        .bind(limit)
        .bind(sealed_through)
        .fetch_all(&mut *tx)
        .await?;
    // Grouped by org, each org's in position order.
    rows.sort_by_key(|row| (row.event.org_id.into_uuid(), row.pos));
    let mut pending = Vec::with_capacity(rows.len());
    let mut current: Option<(Uuid, ChainHead<i64>)> = None;
    for row in rows {
        let org = row.event.org_id.into_uuid();
        let head = match &current {
            Some((current_org, head)) if *current_org == org => head.clone(),
            _ => {
                let head = chain_head(&mut tx, org).await?;
                current = Some((org, head.clone()));
                head
            }
        };
        pending.push((head, row.pos, AuditRecord::from(row.event)));
    }
    let (seals, report) = seal_pass(pending);
    let now = stored_now();
    for seal in &seals {
        insert_seal(&mut tx, seal, &now).await?;
    }
    tx.commit().await?;
    Ok(report)
}

async fn insert_seal(
    connection: &mut SqliteConnection,
    seal: &NewSeal<i64>,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_seals (org_id, first_seq, last_seq, after_pos, through_pos, newest_time, hashes, sealed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seal.org_id.hyphenated())
    .bind(seal.first_seq)
    .bind(seal.last_seq)
    .bind(seal.after)
    .bind(seal.through)
    .bind(stored_time(seal.newest_time))
    .bind(&seal.hashes)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The org's newest seal, or its checkpoint, or the start of a chain.
async fn chain_head(
    connection: &mut SqliteConnection,
    org: Uuid,
) -> Result<ChainHead<i64>, StoreError> {
    let head: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT last_seq, substr(hashes, length(hashes) - 31), through_pos FROM audit_seals \
         WHERE org_id = $1 ORDER BY first_seq DESC LIMIT 1",
    )
    .bind(org.hyphenated())
    .fetch_optional(&mut *connection)
    .await?;
    let head = match head {
        Some(head) => Some(head),
        None => checkpoint(&mut *connection, org).await?,
    };
    Ok(
        head.map_or(ChainHead::start(0), |(seq, hash, position)| ChainHead {
            seq,
            hash,
            position,
        }),
    )
}

async fn checkpoint(
    connection: &mut SqliteConnection,
    org: Uuid,
) -> Result<Option<(i64, Vec<u8>, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT through_seq, hash, through_pos FROM audit_checkpoints WHERE org_id = $1",
    )
    .bind(org.hyphenated())
    .fetch_optional(&mut *connection)
    .await?)
}

pub(crate) async fn verify_audit(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<AuditVerification, StoreError> {
    let org = org_id.as_uuid();
    let mut connection = pool.acquire().await?;
    let start = checkpoint(&mut connection, org).await?;
    let dropped = start.as_ref().map_or(0, |(seq, ..)| *seq);
    let mut head = start.map_or(ChainHead::start(0), |(seq, hash, position)| ChainHead {
        seq,
        hash,
        position,
    });
    let mut events = 0;
    loop {
        let seals: Vec<StoredSeal<i64>> = sqlx::query_as::<_, SealRow>(
            "SELECT first_seq, last_seq, after_pos, through_pos, hashes FROM audit_seals \
             WHERE org_id = $1 AND first_seq > $2 ORDER BY first_seq LIMIT $3",
        )
        .bind(org.hyphenated())
        .bind(head.seq)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .map(StoredSeal::from)
        .collect();
        let done = (seals.len() as i64) < VERIFY_PAGE;
        for seal in &seals {
            let sql = format!(
                "SELECT e.pos, NULL AS seq, {EVENT_SELECT} FROM audit_events e \
                 WHERE e.org_id = $1 AND e.pos > $2 AND e.pos <= $3 ORDER BY e.pos"
            );
            let stored: Vec<PositionedRow> = sqlx::query_as(&sql)
                .bind(org.hyphenated())
                .bind(seal.after)
                .bind(seal.through)
                .fetch_all(&mut *connection)
                .await?;
            let stored = stored
                .into_iter()
                .map(|row| AuditRecord::from(row.event))
                .collect();
            match verify_seal(&mut head, seal, stored) {
                Ok(checked) => events += checked,
                Err(broken) => return Ok(broken),
            }
        }
        if done {
            break;
        }
    }
    let (unsealed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_events WHERE org_id = $1 AND pos > $2")
            .bind(org.hyphenated())
            .bind(head.position)
            .fetch_one(&mut *connection)
            .await?;
    Ok(AuditVerification::Intact {
        events,
        through_seq: head.seq,
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
    let end: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT last_seq, substr(hashes, length(hashes) - 31), through_pos FROM audit_seals \
         WHERE org_id = $1 AND last_seq = \
             coalesce((SELECT min(first_seq) - 1 FROM audit_seals WHERE org_id = $1 AND newest_time >= $2), \
                      (SELECT max(last_seq) FROM audit_seals WHERE org_id = $1))",
    )
    .bind(org)
    .bind(stored_time(before))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((through_seq, hash, through_pos)) = end else {
        return Ok(0);
    };
    sqlx::query("INSERT INTO audit_retention_window (active) VALUES (1)")
        .execute(&mut *tx)
        .await?;
    let dropped = sqlx::query("DELETE FROM audit_events WHERE org_id = $1 AND pos <= $2")
        .bind(org)
        .bind(through_pos)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM audit_seals WHERE org_id = $1 AND last_seq <= $2")
        .bind(org)
        .bind(through_seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_retention_window")
        .execute(&mut *tx)
        .await?;
    let now = stored_now();
    sqlx::query(
        "INSERT INTO audit_checkpoints (org_id, through_seq, hash, dropped, updated_at, through_pos) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (org_id) DO UPDATE SET through_seq = $2, hash = $3, \
             dropped = audit_checkpoints.dropped + $4, updated_at = $5, through_pos = $6",
    )
    .bind(org)
    .bind(through_seq)
    .bind(&hash)
    .bind(dropped as i64)
    .bind(&now)
    .bind(through_pos)
    .execute(&mut *tx)
    .await?;
    let event = retention_event(org_id, through_seq, dropped, before);
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(dropped)
}
