//! Both provider adapters against the fake provider over real HTTP: streamed text,
//! parallel tool calls, usage, tool results on the wire, and how failures are typed.

use std::time::Duration;

use sable_core::Secret;
use sable_llm::{
    AnthropicConfig, AnthropicProvider, ChatMessage, ChatProvider, ChatRequest, Completion,
    OpenAiConfig, OpenAiProvider, ProviderError, ProviderErrorKind, ProviderTimeouts, ToolCall,
};
use sable_testkit::{FakeProvider, FakeToolCall, Script};
use serde_json::{Value, json};

/// Runs each scenario once per adapter, as `openai::<scenario>` and `anthropic::<scenario>`.
macro_rules! for_both_adapters {
    ($($scenario:ident),* $(,)?) => {
        mod openai {
            $(#[tokio::test]
            async fn $scenario() -> anyhow::Result<()> {
                super::$scenario(super::Protocol::OpenAi).await
            })*
        }
        mod anthropic {
            $(#[tokio::test]
            async fn $scenario() -> anyhow::Result<()> {
                super::$scenario(super::Protocol::Anthropic).await
            })*
        }
    };
}

for_both_adapters!(
    streamed_text_arrives_in_several_deltas_and_assembles,
    parallel_tool_calls_come_back_in_order_with_their_arguments,
    usage_is_reported,
    tool_results_in_the_history_go_out_in_the_protocols_shape,
    an_unauthorised_answer_is_an_auth_error,
    a_rate_limit_carries_its_retry_after,
    a_prompt_too_long_for_the_window_is_a_context_overflow,
    a_stream_dropped_after_text_is_unreachable_with_partial_output,
    a_provider_that_never_answers_times_out,
);

#[derive(Clone, Copy)]
enum Protocol {
    OpenAi,
    Anthropic,
}

/// A running fake and an adapter pointed at it.
struct Harness {
    fake: FakeProvider,
    provider: Box<dyn ChatProvider>,
}

impl Harness {
    async fn start(protocol: Protocol) -> anyhow::Result<Self> {
        Self::start_with(protocol, ProviderTimeouts::default()).await
    }

    async fn start_with(protocol: Protocol, timeouts: ProviderTimeouts) -> anyhow::Result<Self> {
        let fake = FakeProvider::start().await?;
        let api_key = Some(Secret::new("sk-test"));
        let provider: Box<dyn ChatProvider> = match protocol {
            Protocol::OpenAi => Box::new(OpenAiProvider::new(OpenAiConfig {
                base_url: fake.base_url.clone(),
                api_key,
                headers: Vec::new(),
                timeouts,
            })?),
            Protocol::Anthropic => {
                let base_url = format!("http://{}", fake.addr);
                Box::new(AnthropicProvider::new(AnthropicConfig {
                    base_url,
                    api_key,
                    headers: Vec::new(),
                    timeouts,
                })?)
            }
        };
        Ok(Self { fake, provider })
    }

    /// Streams one completion, returning it with every delta in arrival order.
    async fn stream(
        &self,
        request: &ChatRequest,
    ) -> (Result<Completion, ProviderError>, Vec<String>) {
        let mut deltas = Vec::new();
        let mut collect = |text: &str| deltas.push(text.to_owned());
        let result = self
            .provider
            .stream_chat("fake-model", request, &mut collect)
            .await;
        (result, deltas)
    }

    async fn complete(&self, request: &ChatRequest) -> anyhow::Result<Completion> {
        Ok(self.stream(request).await.0?)
    }

    async fn fail(&self, request: &ChatRequest) -> ProviderError {
        self.stream(request)
            .await
            .0
            .expect_err("the call should fail")
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user(text),
        ],
        ..ChatRequest::default()
    }
}

async fn streamed_text_arrives_in_several_deltas_and_assembles(
    protocol: Protocol,
) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness
        .fake
        .push(Script::Reply("the quick brown fox".into()));

    let (result, deltas) = harness.stream(&ask("hello")).await;
    let completion = result?;

    assert!(deltas.len() > 1, "expected several deltas, got {deltas:?}");
    assert_eq!(deltas.concat(), "the quick brown fox");
    assert_eq!(completion.text, "the quick brown fox");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert!(completion.tool_calls.is_empty());
    Ok(())
}

async fn parallel_tool_calls_come_back_in_order_with_their_arguments(
    protocol: Protocol,
) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    let calls = vec![
        FakeToolCall::new("call_1", "time", json!({"timezone": "UTC"})),
        FakeToolCall::new("call_2", "http_fetch", json!({"url": "http://x"})),
    ];
    harness.fake.push(Script::ToolCalls {
        text: "Checking both.".into(),
        calls,
    });

    let completion = harness
        .complete(&ask("what time is it, and what is at x?"))
        .await?;

    let summary: Vec<(&str, &str, Value)> = completion
        .tool_calls
        .iter()
        .map(|call| {
            Ok((
                call.id.as_str(),
                call.name.as_str(),
                serde_json::from_str(&call.arguments)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(
        summary,
        vec![
            ("call_1", "time", json!({"timezone": "UTC"})),
            ("call_2", "http_fetch", json!({"url": "http://x"}))
        ]
    );
    assert_eq!(completion.text, "Checking both.");
    assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
    Ok(())
}

async fn usage_is_reported(protocol: Protocol) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.fake.push(Script::Reply("three short words".into()));

    let completion = harness.complete(&ask("count my words please")).await?;

    let usage = completion.usage.expect("usage is reported");
    assert!(usage.input_tokens > 0, "input tokens: {usage:?}");
    assert!(usage.output_tokens > 0, "output tokens: {usage:?}");
    Ok(())
}

async fn tool_results_in_the_history_go_out_in_the_protocols_shape(
    protocol: Protocol,
) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    let calls = vec![
        ToolCall {
            id: "call_1".into(),
            name: "time".into(),
            arguments: r#"{"timezone":"UTC"}"#.into(),
        },
        ToolCall {
            id: "call_2".into(),
            name: "http_fetch".into(),
            arguments: r#"{"url":"http://x"}"#.into(),
        },
    ];
    let mut request = ask("what time is it, and what is at x?");
    request.messages.extend([
        ChatMessage::Assistant {
            content: String::new(),
            tool_calls: calls,
        },
        ChatMessage::Tool {
            tool_call_id: "call_1".into(),
            content: "12:00".into(),
            is_error: false,
        },
        ChatMessage::Tool {
            tool_call_id: "call_2".into(),
            content: "connection refused".into(),
            is_error: true,
        },
    ]);

    let completion = harness.complete(&request).await?;

    assert_eq!(completion.text, "echo: what time is it, and what is at x?");
    let sent = harness
        .fake
        .requests()
        .pop()
        .expect("the fake saw the request");
    match protocol {
        Protocol::OpenAi => assert_openai_tool_results(&sent),
        Protocol::Anthropic => assert_anthropic_tool_results(&sent),
    }
    Ok(())
}

fn assert_openai_tool_results(sent: &Value) {
    let messages = sent["messages"].as_array().expect("messages");
    let tool_messages: Vec<&Value> = messages
        .iter()
        .filter(|message| message["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 2, "{messages:?}");
    assert_eq!(tool_messages[0]["tool_call_id"], "call_1");
    assert_eq!(tool_messages[0]["content"], "12:00");
    assert_eq!(tool_messages[1]["tool_call_id"], "call_2");
}

fn assert_anthropic_tool_results(sent: &Value) {
    assert_eq!(sent["system"], "You are terse.");
    let messages = sent["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages
        .iter()
        .filter_map(|message| message["role"].as_str())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{messages:?}");
    assert_eq!(
        messages[1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "time", "input": {"timezone": "UTC"}})
    );
    assert_eq!(
        messages[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "call_1", "content": "12:00", "is_error": false},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "connection refused", "is_error": true},
        ])
    );
}

async fn an_unauthorised_answer_is_an_auth_error(protocol: Protocol) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.fake.push(Script::Fail {
        status: 401,
        retry_after_secs: None,
    });

    let error = harness.fail(&ask("hello")).await;

    assert_eq!(error.kind, ProviderErrorKind::Auth, "{error:?}");
    Ok(())
}

async fn a_rate_limit_carries_its_retry_after(protocol: Protocol) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.fake.push(Script::Fail {
        status: 429,
        retry_after_secs: Some(1),
    });

    let error = harness.fail(&ask("hello")).await;

    assert_eq!(error.kind, ProviderErrorKind::RateLimited, "{error:?}");
    assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
    Ok(())
}

async fn a_prompt_too_long_for_the_window_is_a_context_overflow(
    protocol: Protocol,
) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.fake.push(Script::ContextOverflow);

    let error = harness.fail(&ask("hello")).await;

    assert_eq!(error.kind, ProviderErrorKind::ContextOverflow, "{error:?}");
    Ok(())
}

async fn a_stream_dropped_after_text_is_unreachable_with_partial_output(
    protocol: Protocol,
) -> anyhow::Result<()> {
    let harness = Harness::start(protocol).await?;
    harness.fake.push(Script::DropAfter("partial ".into()));

    let (result, deltas) = harness.stream(&ask("hello")).await;
    let error = result.expect_err("the call should fail");

    assert_eq!(deltas, ["partial "]);
    assert_eq!(error.kind, ProviderErrorKind::Unreachable, "{error:?}");
    assert!(error.partial_output);
    assert_eq!(error.code(), "provider_partial_output");
    Ok(())
}

async fn a_provider_that_never_answers_times_out(protocol: Protocol) -> anyhow::Result<()> {
    let timeouts = ProviderTimeouts {
        total: Duration::from_millis(300),
        ..ProviderTimeouts::default()
    };
    let harness = Harness::start_with(protocol, timeouts).await?;
    harness.fake.push(Script::Hang);

    let error = harness.fail(&ask("hello")).await;

    assert_eq!(error.kind, ProviderErrorKind::Timeout, "{error:?}");
    assert!(!error.partial_output);
    Ok(())
}
