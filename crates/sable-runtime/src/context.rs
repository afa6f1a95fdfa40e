//! Assembling the model's view of a turn: system prompt, the session summary, then the
//! newest history; choosing the model profile; and asking for a summary when the
//! session outgrew the model's window.

use sable_core::MessageRole;
use sable_llm::{ChatMessage, ChatRequest};

use crate::AgentDefinition;

/// The request for a turn, given the session's summary (if compacted) and its history
/// oldest first (the turn's own user message last). Error replies never reach the model.
pub fn build_chat_request<'a>(
    agent: &AgentDefinition,
    summary: Option<&str>,
    history: impl IntoIterator<Item = (MessageRole, &'a str)>,
) -> ChatRequest {
    let mut messages = vec![ChatMessage::system(agent.system_prompt.clone())];
    if let Some(summary) = summary {
        messages.push(ChatMessage::system(format!("{SUMMARY_HEADING}\n{summary}")));
    }
    // A window cut from the middle of a session may start with a reply; providers want
    // the conversation to start with the user.
    let history = history
        .into_iter()
        .filter(|(role, _)| *role != MessageRole::Error)
        .skip_while(|(role, _)| *role != MessageRole::User);
    messages.extend(history.map(|(role, content)| match role {
        MessageRole::Assistant => ChatMessage::assistant(content),
        _ => ChatMessage::user(content),
    }));
    ChatRequest {
        messages,
        tools: Vec::new(),
        max_output_tokens: agent.max_output_tokens,
        temperature: agent.temperature,
    }
}

/// Introduces the stored summary in the model's context.
pub const SUMMARY_HEADING: &str = "Summary of the earlier conversation:";

/// Asks the model to fold `older` messages into the previous summary. Only the newest
/// messages that fit in `max_chars` are sent (the request must itself fit the window); the
/// summary says how many older ones were left out.
pub fn build_summary_request<'a>(
    previous: Option<&str>,
    older: impl IntoIterator<Item = (MessageRole, &'a str)>,
    max_chars: usize,
) -> ChatRequest {
    let older: Vec<(MessageRole, &str)> = older.into_iter().collect();
    let mut budget = max_chars.saturating_sub(previous.map_or(0, str::len));
    let mut kept = Vec::new();
    for (role, content) in older.iter().rev() {
        let cost = content.len() + 16;
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push((*role, *content));
    }
    kept.reverse();
    let mut transcript = String::new();
    if let Some(previous) = previous {
        transcript.push_str(&format!("Earlier summary: {previous}\n"));
    }
    let omitted = older.len() - kept.len();
    if omitted > 0 {
        transcript.push_str(&format!(
            "({omitted} older messages did not fit and are left out.)\n"
        ));
    }
    for (role, content) in kept {
        transcript.push_str(&format!("{role}: {content}\n"));
    }
    ChatRequest {
        messages: vec![
            ChatMessage::system(
                "Summarise this conversation for your own later use: keep facts, decisions, names and open \
                 questions; drop pleasantries. Answer with the summary only.",
            ),
            ChatMessage::user(transcript),
        ],
        tools: Vec::new(),
        max_output_tokens: Some(1024),
        temperature: None,
    }
}

/// The profile a turn uses and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    pub profile: String,
    pub reason: String,
}

/// Applies the agent's routing rules to the turn's message; first match wins.
pub fn choose_profile(agent: &AgentDefinition, message: &str) -> RouteDecision {
    let length = message.chars().count();
    for (index, route) in agent.routes.iter().enumerate() {
        if route.max_input_chars.is_none_or(|limit| length <= limit) {
            let condition = route.max_input_chars.map_or_else(
                || "always".to_owned(),
                |limit| format!("message of {length} <= {limit} chars"),
            );
            return RouteDecision {
                profile: route.profile.clone(),
                reason: format!("route {}: {condition}", index + 1),
            };
        }
    }
    RouteDecision {
        profile: agent.profile.clone(),
        reason: "agent default profile".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use sable_core::AgentId;

    use super::*;
    use crate::agents::RouteRule;

    fn agent(routes: Vec<RouteRule>) -> AgentDefinition {
        AgentDefinition {
            id: AgentId::parse("a").unwrap(),
            name: "a".into(),
            system_prompt: "Be brief.".into(),
            max_output_tokens: Some(10),
            temperature: None,
            history_messages: 10,
            profile: "default".into(),
            routes,
        }
    }

    #[test]
    fn the_system_prompt_and_summary_come_first_and_error_replies_are_left_out() {
        let request = build_chat_request(
            &agent(vec![]),
            Some("they like tea"),
            [
                (MessageRole::User, "hi"),
                (MessageRole::Error, "failed"),
                (MessageRole::User, "again"),
            ],
        );
        let texts: Vec<&str> = request.messages.iter().map(ChatMessage::text).collect();
        assert_eq!(
            texts,
            [
                "Be brief.",
                "Summary of the earlier conversation:\nthey like tea",
                "hi",
                "again"
            ]
        );
        assert_eq!(request.max_output_tokens, Some(10));
    }

    #[test]
    fn a_history_window_starting_with_a_reply_starts_at_the_next_user_message() {
        let request = build_chat_request(
            &agent(vec![]),
            None,
            [
                (MessageRole::Assistant, "orphan"),
                (MessageRole::User, "hi"),
            ],
        );
        let texts: Vec<&str> = request.messages.iter().map(ChatMessage::text).collect();
        assert_eq!(texts, ["Be brief.", "hi"]);
    }

    #[test]
    fn a_summary_request_keeps_only_the_newest_messages_that_fit() {
        let older = [
            (MessageRole::User, "a".repeat(100)),
            (MessageRole::Assistant, "b".repeat(100)),
            (MessageRole::User, "newest".to_owned()),
        ];
        let request = build_summary_request(
            None,
            older.iter().map(|(role, text)| (*role, text.as_str())),
            150,
        );
        let transcript = request.messages[1].text();
        assert!(
            transcript.contains("newest") && transcript.contains(&"b".repeat(100)),
            "{transcript}"
        );
        assert!(!transcript.contains(&"a".repeat(100)));
        assert!(
            transcript.contains("(1 older messages did not fit"),
            "{transcript}"
        );
    }

    #[test]
    fn short_messages_take_the_cheap_route_and_others_the_default() {
        let agent = agent(vec![RouteRule {
            profile: "cheap".into(),
            max_input_chars: Some(10),
        }]);
        assert_eq!(choose_profile(&agent, "hi").profile, "cheap");
        assert_eq!(
            choose_profile(&agent, "hi").reason,
            "route 1: message of 2 <= 10 chars"
        );
        let long = choose_profile(&agent, "a much longer message");
        assert_eq!(
            (long.profile.as_str(), long.reason.as_str()),
            ("default", "agent default profile")
        );
    }
}
