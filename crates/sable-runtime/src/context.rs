//! Assembling the model's view of a turn: system prompt, then the newest history.

use sable_core::MessageRole;
use sable_llm::{ChatMessage, ChatRequest, ChatRole};

use crate::AgentDefinition;

/// The request for a turn, given the session's history oldest first (the turn's own user
/// message last). Error replies never reach the model.
pub fn build_chat_request<'a>(
    agent: &AgentDefinition,
    history: impl IntoIterator<Item = (MessageRole, &'a str)>,
) -> ChatRequest {
    let mut messages = vec![ChatMessage {
        role: ChatRole::System,
        content: agent.system_prompt.clone(),
    }];
    messages.extend(history.into_iter().filter_map(|(role, content)| {
        let role = match role {
            MessageRole::User => ChatRole::User,
            MessageRole::Assistant => ChatRole::Assistant,
            MessageRole::Error => return None,
        };
        Some(ChatMessage {
            role,
            content: content.to_owned(),
        })
    }));
    ChatRequest {
        messages,
        max_output_tokens: agent.max_output_tokens,
        temperature: agent.temperature,
    }
}

#[cfg(test)]
mod tests {
    use sable_core::AgentId;

    use super::*;

    #[test]
    fn the_system_prompt_comes_first_and_error_replies_are_left_out() {
        let agent = AgentDefinition {
            id: AgentId::parse("a").unwrap(),
            name: "a".into(),
            system_prompt: "Be brief.".into(),
            max_output_tokens: Some(10),
            temperature: None,
            history_messages: 10,
        };
        let request = build_chat_request(
            &agent,
            [
                (MessageRole::User, "hi"),
                (MessageRole::Error, "failed"),
                (MessageRole::User, "again"),
            ],
        );
        let roles: Vec<_> = request
            .messages
            .iter()
            .map(|message| message.role)
            .collect();
        assert_eq!(roles, [ChatRole::System, ChatRole::User, ChatRole::User]);
        assert_eq!(request.max_output_tokens, Some(10));
    }
}
