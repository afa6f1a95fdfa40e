//! The built-in `echo` model: answers with the user's last message, so `sable dev` runs
//! with no provider configured. No network, no key; never a production model.

use crate::{
    ChatMessage, ChatProvider, ChatRequest, Completion, DeltaSink, ProviderFuture, TokenUsage,
};

/// The model name the echo provider reports (and the turn records).
pub const ECHO_MODEL: &str = "echo";

/// Replies `echo: <last user message>`, streamed word by word like a real provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoProvider;

impl ChatProvider for EchoProvider {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn stream_chat<'a>(
        &'a self,
        _model: &'a str,
        request: &'a ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> ProviderFuture<'a> {
        Box::pin(async move {
            let text = echo_of(request);
            for piece in text.split_inclusive(' ') {
                on_delta(piece);
            }
            let input_tokens = request
                .messages
                .iter()
                .map(|message| word_count(message.text()))
                .sum();
            Ok(Completion {
                usage: Some(TokenUsage {
                    input_tokens,
                    output_tokens: word_count(&text),
                    cached_input_tokens: 0,
                }),
                text,
                tool_calls: Vec::new(),
                finish_reason: Some("stop".to_owned()),
                model: Some(ECHO_MODEL.to_owned()),
            })
        })
    }
}

fn echo_of(request: &ChatRequest) -> String {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find_map(|message| match message {
            ChatMessage::User { content } => Some(content.as_str()),
            _ => None,
        });
    format!("echo: {}", last_user.unwrap_or_default())
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_echo_model_streams_the_last_user_message_back() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("first"),
                ChatMessage::assistant("echo: first"),
                ChatMessage::user("hello there"),
            ],
            ..ChatRequest::default()
        };
        let mut streamed = String::new();
        let mut sink = |text: &str| streamed.push_str(text);
        let completion = EchoProvider
            .stream_chat(ECHO_MODEL, &request, &mut sink)
            .await
            .unwrap();
        assert_eq!(completion.text, "echo: hello there");
        assert_eq!(streamed, completion.text);
        assert_eq!(completion.model.as_deref(), Some("echo"));
    }
}
