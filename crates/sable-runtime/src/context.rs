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
    skills: &[SkillEntry],
    summary: Option<&str>,
    history: impl IntoIterator<Item = (MessageRole, &'a str)>,
) -> ChatRequest {
    let mut messages = vec![ChatMessage::system(agent.system_prompt.clone())];
    if !skills.is_empty() {
        messages.push(ChatMessage::system(skill_index(skills)));
    }
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

/// A skill as the prompt lists it: only its name and what it is for; the `skill` tool
/// loads the body when the model wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillEntry {
    pub name: String,
    pub description: String,
}

/// The prompt's list of skills.
pub fn skill_index(skills: &[SkillEntry]) -> String {
    let mut index = String::from(
        "Skills you can use (call the `skill` tool with a name to read its instructions):",
    );
    for skill in skills {
        index.push_str(&format!("\n- {}: {}", skill.name, skill.description));
    }
    index
}

/// Tokens a request to `model` takes: counted with the model family's own tokenizer
/// where one ships with Sable (OpenAI's o200k for GPT-4o, GPT-4.1, GPT-5 and the o-series;
/// cl100k for GPT-4 and GPT-3.5), else estimated at one token per three bytes (English
/// runs near four, so the estimate errs on the safe side for a budget). Each message adds
/// four tokens of framing, and the tools' schemas count as text.
pub fn estimate_tokens(model: &str, request: &ChatRequest) -> usize {
    let count = |text: &str| match tokenizer_for(model) {
        Some(bpe) => bpe.count_ordinary(text),
        None => text.len().div_ceil(3),
    };
    let messages: usize = request
        .messages
        .iter()
        .map(|message| {
            let calls: usize = match message {
                ChatMessage::Assistant { tool_calls, .. } => tool_calls
                    .iter()
                    .map(|call| count(&call.name) + count(&call.arguments))
                    .sum(),
                _ => 0,
            };
            count(message.text()) + calls + 4
        })
        .sum();
    let tools: usize = request
        .tools
        .iter()
        .map(|tool| {
            count(&tool.name) + count(&tool.description) + count(&tool.parameters.to_string())
        })
        .sum();
    messages + tools
}

/// The tokenizer of an OpenAI-family model, loaded on first use (it takes a few MB).
fn tokenizer_for(model: &str) -> Option<&'static tiktoken_rs::CoreBPE> {
    let model = model.rsplit('/').next().unwrap_or(model);
    const O200K: [&str; 6] = ["gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"];
    if O200K.iter().any(|prefix| model.starts_with(prefix)) || model.starts_with("chatgpt-4o") {
        Some(tiktoken_rs::o200k_base_singleton())
    } else if model.starts_with("gpt-4") || model.starts_with("gpt-3.5") {
        Some(tiktoken_rs::cl100k_base_singleton())
    } else {
        None
    }
}

/// The input budget of a model: its window less the tokens reserved for the answer.
pub fn input_budget(context_window: u32, max_output_tokens: Option<u32>) -> usize {
    let reserve = max_output_tokens.unwrap_or(1024);
    usize::try_from(context_window.saturating_sub(reserve)).unwrap_or(usize::MAX)
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
            description: String::new(),
            system_prompt: "Be brief.".into(),
            max_output_tokens: Some(10),
            temperature: None,
            history_messages: 10,
            profile: "default".into(),
            routes,
            tools: vec![],
            approval_required: vec![],
            skills: vec![],
            allow_skill_scripts: false,
            max_tool_rounds: 8,
            max_tool_result_chars: 1000,
        }
    }

    #[test]
    fn the_system_prompt_and_summary_come_first_and_error_replies_are_left_out() {
        let request = build_chat_request(
            &agent(vec![]),
            &[],
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
    fn the_prompt_lists_skills_by_name_and_description_only() {
        let skills = [SkillEntry {
            name: "weather".into(),
            description: "Forecasts".into(),
        }];
        let request =
            build_chat_request(&agent(vec![]), &skills, None, [(MessageRole::User, "hi")]);
        assert_eq!(
            request.messages[1].text(),
            "Skills you can use (call the `skill` tool with a name to read its instructions):\n- weather: Forecasts"
        );
    }

    #[test]
    fn the_estimate_grows_with_the_text_and_the_budget_leaves_room_to_answer() {
        let short = build_chat_request(&agent(vec![]), &[], None, [(MessageRole::User, "hi")]);
        let estimate = |request: &ChatRequest| estimate_tokens("some-model", request);
        let long_text = "x".repeat(3300);
        let long = build_chat_request(
            &agent(vec![]),
            &[],
            None,
            [(MessageRole::User, long_text.as_str())],
        );
        assert!(estimate(&long) >= estimate(&short) + 1000);
        assert_eq!(input_budget(8000, Some(1000)), 7000);
        assert_eq!(input_budget(8000, None), 6976);
    }

    #[test]
    fn openai_models_are_counted_with_their_own_tokenizer() {
        let request = build_chat_request(
            &agent(vec![]),
            &[],
            None,
            [(MessageRole::User, "hello world, hello world")],
        );
        // o200k: "Be| brief|." is 3 tokens, "hello| world|,| hello| world" 5; 4 framing each.
        assert_eq!(estimate_tokens("gpt-4o-mini", &request), 3 + 5 + 8);
        assert_eq!(estimate_tokens("openai/gpt-4o", &request), 16);
        assert!(
            estimate_tokens("llama-3", &request) > 16,
            "the estimate errs high"
        );
    }

    #[test]
    fn a_history_window_starting_with_a_reply_starts_at_the_next_user_message() {
        let request = build_chat_request(
            &agent(vec![]),
            &[],
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
