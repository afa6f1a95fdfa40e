//! Sable's core vocabulary: identifiers, statuses, validated inputs and cron schedules.
//!
//! Pure types with no I/O (schedules never read the clock: callers pass the instant).
//! Every other crate of the workspace may depend on this one; it depends on nothing of
//! ours.

mod error_text;
mod fault;
mod ids;
mod input;
mod role;
mod schedule;
mod secret;
mod status;

pub use error_text::error_chain;
pub use fault::{FaultAction, FaultPoints};
pub use ids::{
    ApiKeyId, CronTaskId, DeliveryId, IdParseError, MessageId, OrgId, SessionId, TurnId,
};
pub use input::{AgentId, Channel, ConversationKey, IdempotencyKey, InputError, MessageText};
pub use role::Role;
pub use schedule::{MisfirePolicy, Schedule, cron_idempotency_key};
pub use secret::Secret;
pub use status::{DeliveryStatus, MessageRole, StatusParseError, TurnStatus};
