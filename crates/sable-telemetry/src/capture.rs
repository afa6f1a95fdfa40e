//! Content capture policy: whether prompts, completions and tool payloads may enter span
//! attributes, per deployment with per-org overrides. Logs never carry them, whatever the
//! policy: content is only ever set through [`crate::genai::record_content`], which
//! writes OpenTelemetry attributes and never a `tracing` field.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

/// How much content a span may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapturePolicy {
    /// No prompts, completions or tool payloads in spans.
    #[default]
    Off,
    /// Content with secrets and the configured patterns masked.
    Redacted,
    /// Content as it is.
    Full,
}

impl CapturePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Redacted => "redacted",
            Self::Full => "full",
        }
    }
}

/// The deployment's policy, the orgs that differ from it, and the extra patterns
/// `redacted` masks.
#[derive(Debug, Clone, Default)]
pub struct ContentCapture {
    default: CapturePolicy,
    per_org: HashMap<String, CapturePolicy>,
    patterns: Vec<Regex>,
}

/// What replaces a masked secret.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets masked under `redacted` whatever the configuration: provider keys, bearer
/// tokens, AWS access keys, and `password=` / `secret:` style assignments.
static BUILTIN_SECRETS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"sk-[A-Za-z0-9_\-]{16,}",
        r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]{8,}",
        r"AKIA[0-9A-Z]{16}",
        r"(?i)(password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S+",
    ]
    .iter()
    .map(|pattern| Regex::new(pattern).expect("the built-in patterns compile"))
    .collect()
});

impl ContentCapture {
    /// A policy for the deployment, overrides keyed by org id, and extra patterns
    /// (regular expressions) to mask under `redacted`.
    pub fn new(
        default: CapturePolicy,
        per_org: HashMap<String, CapturePolicy>,
        patterns: &[String],
    ) -> Result<Self, regex::Error> {
        let patterns = patterns
            .iter()
            .map(|pattern| Regex::new(pattern))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            default,
            per_org,
            patterns,
        })
    }

    /// The policy that applies to `org_id`.
    pub fn policy_for(&self, org_id: &str) -> CapturePolicy {
        self.policy_with(org_id, None)
    }

    /// The policy that applies to `org_id` when the org chose `own` in its settings: the
    /// operator's entry for the org first, then the org's own choice, then the
    /// deployment's default.
    pub fn policy_with(&self, org_id: &str, own: Option<CapturePolicy>) -> CapturePolicy {
        self.per_org
            .get(org_id)
            .copied()
            .or(own)
            .unwrap_or(self.default)
    }

    /// The text as `org_id`'s policy lets it into a span: nothing, masked, or whole.
    pub fn apply(&self, org_id: &str, text: &str) -> Option<String> {
        self.apply_policy(self.policy_for(org_id), text)
    }

    /// The text as `policy` lets it into a span.
    pub fn apply_policy(&self, policy: CapturePolicy, text: &str) -> Option<String> {
        match policy {
            CapturePolicy::Off => None,
            CapturePolicy::Redacted => Some(self.redact(text)),
            CapturePolicy::Full => Some(text.to_owned()),
        }
    }

    fn redact(&self, text: &str) -> String {
        BUILTIN_SECRETS
            .iter()
            .chain(&self.patterns)
            .fold(text.to_owned(), |text, pattern| {
                pattern.replace_all(&text, REDACTED).into_owned()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_entry_decides_over_the_orgs_own_choice_which_decides_over_the_default() {
        let capture = capture(CapturePolicy::Off);
        assert_eq!(
            capture.policy_with("quiet", Some(CapturePolicy::Full)),
            CapturePolicy::Full
        );
        assert_eq!(capture.policy_with("quiet", None), CapturePolicy::Off);
        assert_eq!(
            capture.policy_with("loud", Some(CapturePolicy::Off)),
            CapturePolicy::Full
        );
    }

    fn capture(default: CapturePolicy) -> ContentCapture {
        let per_org = HashMap::from([("loud".to_owned(), CapturePolicy::Full)]);
        ContentCapture::new(default, per_org, &["ticket-\\d+".to_owned()]).unwrap()
    }

    #[test]
    fn off_lets_no_content_through_unless_the_org_overrides_it() {
        let capture = capture(CapturePolicy::Off);
        assert_eq!(capture.apply("quiet", "hello"), None);
        assert_eq!(capture.apply("loud", "hello").as_deref(), Some("hello"));
    }

    #[test]
    fn redacted_masks_builtin_secrets_and_configured_patterns() {
        let capture = capture(CapturePolicy::Redacted);
        let text =
            "key sk-abcdefghijklmnopqrstu, Bearer abc.def.ghi123, ticket-42, password=hunter2 ok";
        let masked = capture.apply("quiet", text).unwrap();
        for secret in ["sk-abc", "abc.def", "ticket-42", "hunter2"] {
            assert!(!masked.contains(secret), "{secret} leaked in {masked}");
        }
        assert!(
            masked.starts_with("key [REDACTED]") && masked.ends_with(" ok"),
            "{masked}"
        );
    }

    #[test]
    fn full_keeps_the_text() {
        let capture = capture(CapturePolicy::Full);
        assert_eq!(
            capture
                .apply("quiet", "sk-abcdefghijklmnopqrstu")
                .as_deref(),
            Some("sk-abcdefghijklmnopqrstu")
        );
    }
}
