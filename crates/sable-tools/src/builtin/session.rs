//! `session`: what the agent may do with the user's sessions: describe this one, list
//! the user's, start a new one for this conversation, or resume an earlier one.

use std::time::Duration;

use sable_core::SessionId;
use sable_store::SessionInfo;
use serde_json::{Value, json};

use super::{builtin, store_failed, text_argument};
use crate::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk};

pub struct SessionTool {
    descriptor: ToolDescriptor,
}

impl SessionTool {
    pub fn new() -> Self {
        Self {
            descriptor: builtin(
                "session",
                "The user's conversations. action=info describes this session; list shows the user's sessions; new makes the next message start a fresh session; resume (with session_id) continues an earlier one.",
                json!({
                    "type": "object",
                    "properties": {
                        "action": {"enum": ["info", "list", "new", "resume"]},
                        "session_id": {"type": "string"}
                    },
                    "required": ["action"],
                    "additionalProperties": false
                }),
                ToolRisk::Low,
                false,
                Duration::from_secs(5),
            ),
        }
    }
}

impl Default for SessionTool {
    fn default() -> Self {
        Self::new()
    }
}

fn describe(info: &SessionInfo) -> Value {
    json!({
        "session_id": info.id,
        "channel": info.channel,
        "conversation": info.conversation_key,
        "agent": info.agent_id,
        "turns": info.turns,
        "created_at": info.created_at,
        "last_active_at": info.updated_at,
    })
}

#[async_trait::async_trait]
impl Tool for SessionTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let store = &context.store;
        let (org_id, current) = (context.org_id, context.session_id);
        let moved = match text_argument(&arguments, "action")? {
            "info" => {
                let info = store
                    .session_info(org_id, current)
                    .await
                    .map_err(|error| store_failed(&error))?;
                return Ok(describe(&info).to_string());
            }
            "list" => {
                let Some(user) = &context.user_id else {
                    return Err(ToolError::Refused(
                        "this channel names no user, so there is no list of their sessions".into(),
                    ));
                };
                let sessions = store
                    .user_sessions(org_id, user, 20)
                    .await
                    .map_err(|error| store_failed(&error))?;
                return Ok(Value::Array(sessions.iter().map(describe).collect()).to_string());
            }
            "new" => store.move_conversation(org_id, current, None).await,
            _ => {
                let target: SessionId =
                    text_argument(&arguments, "session_id")?
                        .parse()
                        .map_err(|_| {
                            ToolError::InvalidArguments("session_id is not a session id".into())
                        })?;
                store.move_conversation(org_id, current, Some(target)).await
            }
        };
        match moved.map_err(|error| store_failed(&error))? {
            Some(session) => Ok(format!(
                "The conversation now continues in session {session}; the next message goes there."
            )),
            None => Err(ToolError::Refused(
                "not possible: this session is not bound to a conversation, or that session is not the same user's on this channel".into(),
            )),
        }
    }
}
