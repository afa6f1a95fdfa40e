//! Which agent answers a message: `config/bindings.toml` rules from channel,
//! conversation or user to an agent.
//!
//! Precedence, most specific first: an agent named in the request, then a rule for the
//! conversation, then one for the user, then one for the channel, then the deployment's
//! default agent. Among rules of one kind the first in the file wins. A conversation or
//! user rule may also name a channel, and then applies on that channel only.

use std::path::Path;

use serde::Deserialize;

use crate::AgentError;

/// One rule of `bindings.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingRule {
    pub agent: String,
    pub channel: Option<String>,
    pub conversation: Option<String>,
    pub user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingsFile {
    #[serde(default, rename = "binding")]
    bindings: Vec<BindingRule>,
}

/// What a message says about where it came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindingRequest<'a> {
    pub explicit_agent: Option<&'a str>,
    pub channel: &'a str,
    pub conversation: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// The agent chosen and the rule that chose it (recorded on the turn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundAgent {
    pub agent: String,
    pub rule: String,
}

/// Every binding rule of a deployment.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    rules: Vec<BindingRule>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conversation,
    User,
    Channel,
}

impl Bindings {
    pub fn new(rules: Vec<BindingRule>) -> Self {
        Self { rules }
    }

    /// The rules, in the order they are tried within each kind.
    pub fn rules(&self) -> &[BindingRule] {
        &self.rules
    }

    /// Reads `path`; a missing file means no rules.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(AgentError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let invalid = |message: String| AgentError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: BindingsFile =
            toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        for (index, rule) in file.bindings.iter().enumerate() {
            if rule.channel.is_none() && rule.conversation.is_none() && rule.user.is_none() {
                return Err(invalid(format!(
                    "binding[{index}]: give at least one of channel, conversation or user"
                )));
            }
            if rule.conversation.is_some() && rule.user.is_some() {
                return Err(invalid(format!(
                    "binding[{index}]: give conversation or user, not both"
                )));
            }
        }
        Ok(Self::new(file.bindings))
    }

    /// Fails naming the rule when it binds to an agent `exists` rejects.
    pub fn check_agents(
        &self,
        path: &Path,
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), AgentError> {
        match self.rules.iter().position(|rule| !exists(&rule.agent)) {
            Some(index) => Err(AgentError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "binding[{index}].agent: no agent named '{}'",
                    self.rules[index].agent
                ),
            }),
            None => Ok(()),
        }
    }

    /// Chooses the agent for a message.
    pub fn resolve(&self, request: &BindingRequest<'_>, default_agent: &str) -> BoundAgent {
        if let Some(agent) = request.explicit_agent {
            return BoundAgent {
                agent: agent.to_owned(),
                rule: "explicit request".to_owned(),
            };
        }
        for kind in [Kind::Conversation, Kind::User, Kind::Channel] {
            let found = self
                .rules
                .iter()
                .enumerate()
                .find(|(_, rule)| rule_kind(rule) == kind && matches(rule, request));
            if let Some((index, rule)) = found {
                return BoundAgent {
                    agent: rule.agent.clone(),
                    rule: format!("binding[{index}] ({})", describe(rule)),
                };
            }
        }
        BoundAgent {
            agent: default_agent.to_owned(),
            rule: "default agent".to_owned(),
        }
    }
}

fn rule_kind(rule: &BindingRule) -> Kind {
    if rule.conversation.is_some() {
        Kind::Conversation
    } else if rule.user.is_some() {
        Kind::User
    } else {
        Kind::Channel
    }
}

fn matches(rule: &BindingRule, request: &BindingRequest<'_>) -> bool {
    let same = |wanted: &Option<String>, given: Option<&str>| {
        wanted.as_deref().is_none_or(|wanted| Some(wanted) == given)
    };
    same(&rule.channel, Some(request.channel))
        && same(&rule.conversation, request.conversation)
        && same(&rule.user, request.user)
}

fn describe(rule: &BindingRule) -> String {
    [
        ("conversation", &rule.conversation),
        ("user", &rule.user),
        ("channel", &rule.channel),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name} = {value:?}")))
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        agent: &str,
        channel: Option<&str>,
        conversation: Option<&str>,
        user: Option<&str>,
    ) -> BindingRule {
        BindingRule {
            agent: agent.into(),
            channel: channel.map(Into::into),
            conversation: conversation.map(Into::into),
            user: user.map(Into::into),
        }
    }

    fn precedence_rules() -> Bindings {
        // Listed least specific first, so file order cannot be what decides.
        Bindings::new(vec![
            rule("by-channel", Some("api"), None, None),
            rule("by-user", None, None, Some("u1")),
            rule("by-user-on-feishu", Some("feishu"), None, Some("u2")),
            rule("by-conversation", None, Some("c1"), None),
            rule("second-conversation-rule", None, Some("c1"), None),
        ])
    }

    type Case = (
        Option<&'static str>,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        &'static str,
    );

    /// explicit agent, channel, conversation, user => agent, rule
    fn precedence_cases() -> [Case; 9] {
        [
            // explicit, channel, conversation, user => agent, rule
            (
                Some("asked"),
                "api",
                Some("c1"),
                Some("u1"),
                "asked",
                "explicit request",
            ),
            (
                None,
                "api",
                Some("c1"),
                Some("u1"),
                "by-conversation",
                "binding[3] (conversation = \"c1\")",
            ),
            (
                None,
                "feishu",
                Some("c1"),
                None,
                "by-conversation",
                "binding[3] (conversation = \"c1\")",
            ),
            (
                None,
                "api",
                Some("c2"),
                Some("u1"),
                "by-user",
                "binding[1] (user = \"u1\")",
            ),
            (
                None,
                "feishu",
                None,
                Some("u1"),
                "by-user",
                "binding[1] (user = \"u1\")",
            ),
            (
                None,
                "api",
                None,
                Some("u2"),
                "by-channel",
                "binding[0] (channel = \"api\")",
            ),
            (
                None,
                "feishu",
                None,
                Some("u2"),
                "by-user-on-feishu",
                "binding[2] (user = \"u2\", channel = \"feishu\")",
            ),
            (
                None,
                "api",
                None,
                None,
                "by-channel",
                "binding[0] (channel = \"api\")",
            ),
            (
                None,
                "feishu",
                Some("c9"),
                Some("u9"),
                "default",
                "default agent",
            ),
        ]
    }

    #[test]
    fn precedence_is_explicit_then_conversation_user_channel_default() {
        let bindings = precedence_rules();
        for (explicit_agent, channel, conversation, user, agent, rule) in precedence_cases() {
            let request = BindingRequest {
                explicit_agent,
                channel,
                conversation,
                user,
            };
            let bound = bindings.resolve(&request, "default");
            assert_eq!(
                (bound.agent.as_str(), bound.rule.as_str()),
                (agent, rule),
                "{request:?}"
            );
        }
    }

    #[test]
    fn a_rule_without_a_selector_or_with_an_unknown_agent_is_refused() {
        let dir = std::env::temp_dir().join(format!("sable-bindings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bindings.toml");
        std::fs::write(&path, "[[binding]]\nagent = \"a\"\n").unwrap();
        let error = Bindings::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("bindings.toml") && error.contains("binding[0]"),
            "{error}"
        );
        std::fs::write(&path, "[[binding]]\nagent = \"ghost\"\nuser = \"u\"\n").unwrap();
        let bindings = Bindings::load(&path).unwrap();
        let error = bindings
            .check_agents(&path, |agent| agent == "default")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("binding[0].agent: no agent named 'ghost'"),
            "{error}"
        );
        assert!(Bindings::load(&dir.join("missing.toml")).is_ok());
    }
}
