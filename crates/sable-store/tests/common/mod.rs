//! What the Postgres store's test crates share.

use std::time::Duration;

use sable_core::{OrgId, SessionId};
use sable_store::{FinishTurn, NextTurn, PgStore, ProviderCallRecord, TurnEnded, TurnOutcome};

/// The lease owner the tests' turns run under.
pub const WORKER: &str = "worker-1";

/// Begins the session's next turn and ends it with a reply, as a worker does: the claim,
/// then the end, which writes `provider_calls` with it.
pub async fn run_turn(
    store: &PgStore,
    org_id: OrgId,
    session_id: SessionId,
    history_limit: i64,
    provider_calls: Vec<ProviderCallRecord>,
) -> anyhow::Result<TurnEnded> {
    let NextTurn::Begun(begun) = store
        .begin_next_turn(
            org_id,
            session_id,
            WORKER,
            Duration::from_secs(30),
            history_limit,
        )
        .await?
    else {
        anyhow::bail!("the turn did not begin");
    };
    let ended = store
        .finish_turn(FinishTurn {
            turn: &begun.turn,
            attempt: begun.attempt,
            outcome: TurnOutcome::Replied {
                text: "an answer".into(),
            },
            usage: None,
            route: None,
            provider_calls,
            lease_owner: Some(WORKER),
        })
        .await?;
    ended.ok_or_else(|| anyhow::anyhow!("the turn did not end"))
}
