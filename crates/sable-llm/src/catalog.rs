//! The provider and model-profile catalog: `config/providers.toml` (where to reach each
//! provider) and `config/models.toml` (named profiles: provider, model, window, fallbacks;
//! and the retry policy). Secrets never live in these files: a provider names the
//! environment variable or file that holds its key, and the binary resolves it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ProviderTimeouts;

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    /// The built-in echo model (no network): what `sable dev` answers with when no
    /// provider is configured.
    Echo,
}

/// One provider entry of `providers.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: ProviderKind,
    /// Required for every kind but `echo`.
    #[serde(default)]
    pub base_url: String,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Or a file holding it (e.g. a mounted Kubernetes secret).
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "defaults::connect_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::first_byte_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "defaults::idle_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "defaults::total_ms")]
    pub total_timeout_ms: u64,
}

impl ProviderSpec {
    pub fn timeouts(&self) -> ProviderTimeouts {
        ProviderTimeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            first_byte: Duration::from_millis(self.first_byte_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
            total: Duration::from_millis(self.total_timeout_ms),
        }
    }
}

/// One profile of `models.toml`: what an agent names to pick a model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub provider: String,
    pub model: String,
    /// Tokens the model can read; the context budget is planned against it.
    #[serde(default = "defaults::context_window")]
    pub context_window: u32,
    pub max_output_tokens: Option<u32>,
    /// Profiles to fail over to, in order, when this one is down.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// When and how often a call is retried, and how long a failing profile rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Retries of one profile after a retryable failure (so 1 + this many calls).
    pub max_retries: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A `Retry-After` longer than this fails over instead of waiting.
    pub max_retry_after_ms: u64,
    /// A profile that failed over is skipped this long (circuit breaker).
    pub cooldown_ms: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay_ms: 250,
            max_delay_ms: 8_000,
            max_retry_after_ms: 30_000,
            cooldown_ms: 30_000,
        }
    }
}

/// `providers.toml` and `models.toml` together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CatalogSpec {
    pub providers: BTreeMap<String, ProviderSpec>,
    pub profiles: BTreeMap<String, ProfileSpec>,
    pub retry: RetrySpec,
}

/// The shape of `providers.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
}

/// The shape of `models.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
}

/// A catalog that refers to something it does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

impl CatalogSpec {
    pub fn new(providers: ProvidersFile, models: ModelsFile) -> Self {
        Self {
            providers: providers.providers,
            profiles: models.profiles,
            retry: models.retry,
        }
    }

    /// Reads `providers.toml` and `models.toml` given as text.
    pub fn from_toml(providers: &str, models: &str) -> Result<Self, CatalogError> {
        let providers: ProvidersFile = toml::from_str(providers)
            .map_err(|error| CatalogError(format!("providers.toml: {error}")))?;
        let models: ModelsFile = toml::from_str(models)
            .map_err(|error| CatalogError(format!("models.toml: {error}")))?;
        Ok(Self::new(providers, models))
    }

    /// Every profile names a known provider and known fallbacks.
    pub fn validate(&self) -> Result<(), CatalogError> {
        for (name, profile) in &self.profiles {
            if !self.providers.contains_key(&profile.provider) {
                return Err(CatalogError(format!(
                    "profiles.{name}.provider: no provider named '{}'",
                    profile.provider
                )));
            }
            if let Some(missing) = profile
                .fallbacks
                .iter()
                .find(|fallback| !self.profiles.contains_key(*fallback))
            {
                return Err(CatalogError(format!(
                    "profiles.{name}.fallbacks: no profile named '{missing}'"
                )));
            }
        }
        Ok(())
    }
}

mod defaults {
    pub fn connect_ms() -> u64 {
        5_000
    }
    pub fn first_byte_ms() -> u64 {
        60_000
    }
    pub fn idle_ms() -> u64 {
        60_000
    }
    pub fn total_ms() -> u64 {
        120_000
    }
    pub fn context_window() -> u32 {
        128_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_with_an_unknown_provider_or_fallback_is_refused() {
        let providers: ProvidersFile =
            toml_like(r#"{"providers": {"p": {"kind": "openai", "base_url": "http://x"}}}"#);
        let models: ModelsFile =
            toml_like(r#"{"profiles": {"a": {"provider": "q", "model": "m"}}}"#);
        let error = CatalogSpec::new(providers.clone(), models)
            .validate()
            .unwrap_err();
        assert!(error.0.contains("profiles.a.provider"), "{error}");
        let models: ModelsFile = toml_like(
            r#"{"profiles": {"a": {"provider": "p", "model": "m", "fallbacks": ["b"]}}}"#,
        );
        let error = CatalogSpec::new(providers, models).validate().unwrap_err();
        assert!(error.0.contains("profiles.a.fallbacks"), "{error}");
    }

    fn toml_like<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }
}
