//! Sable's core vocabulary: identifiers, statuses and validated inputs.
//!
//! Pure types with no I/O. Every other crate of the workspace may depend on this one;
//! it depends on nothing of ours.

mod error_text;
mod fault;
mod ids;
mod input;
mod secret;
mod status;

pub use error_text::error_chain;
pub use fault::{FaultAction, FaultPoints};
pub use ids::{ApiKeyId, DeliveryId, IdParseError, MessageId, OrgId, SessionId, TurnId};
pub use input::{AgentId, Channel, ConversationKey, IdempotencyKey, InputError, MessageText};
pub use secret::Secret;
pub use status::{DeliveryStatus, MessageRole, StatusParseError, TurnStatus};
