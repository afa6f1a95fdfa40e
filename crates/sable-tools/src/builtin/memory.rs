//! `memory`: notes the agent keeps about the user across sessions (get, append,
//! replace, delete), stored per org and user.

use std::time::Duration;

use sable_store::MemoryEdit;
use serde_json::{Value, json};

use super::{builtin, store_failed, text_argument};
use crate::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk};

pub struct Memory {
    descriptor: ToolDescriptor,
}

impl Memory {
    pub fn new() -> Self {
        Self {
            descriptor: builtin(
                "memory",
                "Your notes about this user, kept across conversations. action=get reads them; append adds a line; replace rewrites them; delete forgets them.",
                json!({
                    "type": "object",
                    "properties": {
                        "action": {"enum": ["get", "append", "replace", "delete"]},
                        "text": {"type": "string", "maxLength": 8000}
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

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

/// Whose notes: the channel's user, or the session when the channel named nobody.
fn user_key(context: &ToolContext) -> String {
    context.user_id.as_ref().map_or_else(
        || format!("session:{}", context.session_id),
        |user| format!("user:{user}"),
    )
}

#[async_trait::async_trait]
impl Tool for Memory {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let key = user_key(context);
        let store = &context.store;
        let edit = match text_argument(&arguments, "action")? {
            "get" => {
                let note = store
                    .memory_note(context.org_id, &key)
                    .await
                    .map_err(|error| store_failed(&error))?;
                return Ok(note.unwrap_or_else(|| "(no notes yet)".to_owned()));
            }
            "append" => MemoryEdit::Append(text_argument(&arguments, "text")?.to_owned()),
            "replace" => MemoryEdit::Replace(text_argument(&arguments, "text")?.to_owned()),
            _ => MemoryEdit::Delete,
        };
        let after = store
            .edit_memory_note(context.org_id, &key, edit)
            .await
            .map_err(|error| store_failed(&error))?;
        Ok(match after {
            Some(note) => format!("Saved. Notes now:\n{note}"),
            None => "Notes deleted.".to_owned(),
        })
    }
}
