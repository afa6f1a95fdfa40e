//! The one way a message becomes a queued turn: bindings choose the agent, the store
//! writes message + turn in one transaction, the bus wakes a worker. `POST /v1/messages`
//! (gateway) and each cron occurrence (cron service) both enqueue through here.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sable_bus::Bus;
use sable_core::{AgentId, Channel, IdempotencyKey, MessageText, OrgId, cron_idempotency_key};
use sable_proto::v1::TurnWakeup;
use sable_store::{
    AcceptedTurn, Actor, CronTarget, CronTask, NewMessage, SessionTarget, Store, StoreError,
};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, TurnLabels};
use tracing::Instrument;

use crate::{BindingRequest, Bindings, OrgConfigError, OrgConfigs};

/// How intake picks an agent: the agents a message may name, the binding rules, and the
/// agent of last resort.
#[derive(Debug, Clone)]
pub struct IntakeRouting {
    pub default_agent: AgentId,
    pub agents: BTreeSet<String>,
    pub bindings: Bindings,
}

/// A message to enqueue, already parsed at the edge.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub org_id: OrgId,
    pub channel: Channel,
    pub target: SessionTarget,
    /// The agent the sender asked for, if any (checked against the catalog).
    pub agent: Option<AgentId>,
    pub text: MessageText,
    pub idempotency_key: Option<IdempotencyKey>,
    /// The context the turn's trace continues from.
    pub trace: TraceContext,
    /// Who sent it (the key, the Feishu user, the cron task), for the audit.
    pub actor: Actor,
}

impl Inbound {
    /// One occurrence of a cron task, scheduled at `scheduled`: its prompt to its target,
    /// keyed `cron:<task_id>:<scheduled RFC 3339 UTC>` so that however often it is
    /// enqueued it makes one turn.
    pub fn cron_occurrence(
        task: &CronTask,
        scheduled: DateTime<Utc>,
    ) -> Result<Self, sable_core::InputError> {
        let target = match &task.target {
            CronTarget::None => SessionTarget::New,
            CronTarget::Session(session_id) => SessionTarget::Existing(*session_id),
            CronTarget::Conversation { key, user_id } => SessionTarget::Conversation {
                key: key.clone(),
                user_id: user_id.clone(),
            },
        };
        Ok(Self {
            org_id: task.org_id,
            channel: Channel::Api,
            target,
            agent: task.agent.clone().map(AgentId::parse).transpose()?,
            text: MessageText::parse(task.prompt.clone())?,
            idempotency_key: Some(IdempotencyKey::parse(cron_idempotency_key(
                task.id, scheduled,
            ))?),
            trace: TraceContext::new_root(),
            actor: Actor::cron(task.id),
        })
    }
}

/// Why a message was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown agent '{0}'")]
    UnknownAgent(String),
    #[error(transparent)]
    Invalid(#[from] sable_core::InputError),
    /// The org's stored configuration does not hold together (an operator must fix it).
    #[error("the org's configuration is invalid: {0}")]
    OrgConfig(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<OrgConfigError> for IntakeError {
    fn from(error: OrgConfigError) -> Self {
        match error {
            OrgConfigError::Store(error) => Self::Store(error),
            invalid => Self::OrgConfig(invalid.to_string()),
        }
    }
}

/// Shared by every producer of turns; cheap to clone.
#[derive(Debug, Clone)]
pub struct TurnIntake {
    store: Store,
    bus: Bus,
    orgs: OrgConfigs,
}

impl TurnIntake {
    /// Routes by each org's configuration (`orgs`: its agents, bindings and default agent
    /// over the deployment's).
    pub fn new(store: Store, bus: Bus, orgs: OrgConfigs) -> Self {
        Self { store, bus, orgs }
    }

    /// The per-org configurations intake routes by.
    pub fn orgs(&self) -> &OrgConfigs {
        &self.orgs
    }

    /// The message to accept, with the agent the org's bindings chose.
    pub async fn route(&self, inbound: Inbound) -> Result<NewMessage, IntakeError> {
        let org = self.orgs.current(inbound.org_id).await?;
        route_by(&org.routing, inbound)
    }
}

/// The message to accept, with the agent `routing` chose (no I/O).
fn route_by(routing: &IntakeRouting, inbound: Inbound) -> Result<NewMessage, IntakeError> {
    {
        if let Some(agent) = &inbound.agent
            && !routing.agents.contains(agent.as_str())
        {
            return Err(IntakeError::UnknownAgent(agent.to_string()));
        }
        let (conversation, user) = match &inbound.target {
            SessionTarget::Conversation { key, user_id } => {
                (Some(key.as_str()), user_id.as_deref())
            }
            _ => (None, None),
        };
        let bound = routing.bindings.resolve(
            &BindingRequest {
                explicit_agent: inbound.agent.as_ref().map(AgentId::as_str),
                channel: inbound.channel.as_str(),
                conversation,
                user,
            },
            routing.default_agent.as_str(),
        );
        let agent = AgentId::parse(bound.agent)?;
        Ok(NewMessage {
            org_id: inbound.org_id,
            channel: inbound.channel,
            agent,
            binding_rule: bound.rule,
            target: inbound.target,
            text: inbound.text,
            idempotency_key: inbound.idempotency_key,
            trace_parent: Some(inbound.trace.to_string()),
            actor: inbound.actor,
        })
    }
}

impl TurnIntake {
    /// Routes, accepts and (for a new turn) publishes its wake-up. A repeated
    /// idempotency key returns the first turn and publishes nothing.
    pub async fn enqueue(
        &self,
        inbound: Inbound,
        tags: Vec<String>,
    ) -> Result<AcceptedTurn, IntakeError> {
        let (org_id, trace) = (inbound.org_id, inbound.trace);
        let user_id = match &inbound.target {
            SessionTarget::Conversation { user_id, .. } => user_id.clone(),
            _ => None,
        };
        let accepted = self
            .store
            .accept_message(self.route(inbound).await?)
            .await?;
        if accepted.created {
            let labels = TurnLabels {
                org_id: org_id.to_string(),
                session_id: accepted.session_id.to_string(),
                user_id,
                trace_name: String::new(),
                tags,
            };
            self.publish_wakeup(org_id, &accepted, &labels, &trace)
                .await;
        }
        Ok(accepted)
    }

    /// Publishes the turn's wake-up in an `enqueue` span. A failure is logged, not
    /// returned: the turn is already safe in the store and the sweeper republishes it.
    pub async fn publish_wakeup(
        &self,
        org_id: OrgId,
        accepted: &AcceptedTurn,
        labels: &TurnLabels,
        trace: &TraceContext,
    ) {
        let span = tracing::info_span!(
            "enqueue",
            otel.name = "publish turn wake-up",
            otel.kind = "producer"
        );
        labels.annotate(&span);
        let traceparent = genai::trace_context_of(&span)
            .unwrap_or_else(|| trace.child())
            .to_string();
        let turn_id = accepted.turn_id.to_string();
        let wakeup = TurnWakeup {
            turn_id: turn_id.clone(),
            org_id: org_id.to_string(),
            session_id: accepted.session_id.to_string(),
        };
        async {
            if let Err(error) = self
                .bus
                .publish_turn_wakeup(&wakeup, &turn_id, Some(&traceparent))
                .await
            {
                tracing::warn!(%error, turn_id = %wakeup.turn_id, "wake-up not published; the sweeper will retry");
            }
        }
        .instrument(span)
        .await;
    }
}
