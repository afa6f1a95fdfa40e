//! `time`: the current date and time, in UTC or an IANA time zone.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::builtin;
use crate::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk};

pub struct Time {
    descriptor: ToolDescriptor,
}

impl Time {
    pub fn new() -> Self {
        Self {
            descriptor: builtin(
                "time",
                "The current date and time. Give an IANA time zone such as Europe/Paris for local time; UTC otherwise.",
                json!({
                    "type": "object",
                    "properties": {"timezone": {"type": "string", "description": "IANA time zone, e.g. Asia/Shanghai"}},
                    "additionalProperties": false
                }),
                ToolRisk::Low,
                true,
                Duration::from_secs(2),
            ),
        }
    }
}

impl Default for Time {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Tool for Time {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, _context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let now = Utc::now();
        match arguments["timezone"].as_str() {
            None => Ok(format!("{} (UTC, {})", now.to_rfc3339(), now.format("%A"))),
            Some(name) => {
                let zone: chrono_tz::Tz = name.parse().map_err(|_| {
                    ToolError::InvalidArguments(format!("unknown time zone '{name}'"))
                })?;
                let local = now.with_timezone(&zone);
                Ok(format!(
                    "{} ({name}, {})",
                    local.to_rfc3339(),
                    local.format("%A")
                ))
            }
        }
    }
}
