//! Builds the model client from `config/providers.toml` and `config/models.toml`, with
//! the environment's overrides (`OPENAI_BASE_URL`, `SABLE_MODEL`, timeouts) and the
//! providers' keys read from the variables or files the catalog names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use sable_core::Secret;
use sable_llm::{
    CatalogSpec, ECHO_MODEL, ModelClient, ModelsFile, ProviderKind, ProviderSpec, ProvidersFile,
};
use serde::de::DeserializeOwned;

use crate::settings::Settings;

/// Where a process's model answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The providers and profiles of the catalog files.
    Configured,
    /// Every profile answered by the built-in echo model (`sable dev` with no provider).
    Echo,
}

/// The variables that configure a real provider; `sable dev` falls back to the echo
/// model when none is set.
pub const PROVIDER_VARIABLES: [&str; 3] =
    ["OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"];

pub fn build_model_client(settings: &Settings, source: ModelSource) -> anyhow::Result<ModelClient> {
    let catalog = model_catalog(settings, source)?;
    let keys = read_keys(&catalog)?;
    ModelClient::new(&catalog, &keys).with_context(|| {
        format!(
            "invalid model catalog ({} and {})",
            settings.providers_file.display(),
            settings.models_file.display()
        )
    })
}

/// The providers and profiles of the catalog files with the environment's overrides.
pub fn model_catalog(settings: &Settings, source: ModelSource) -> anyhow::Result<CatalogSpec> {
    let mut catalog = CatalogSpec::new(
        read_toml::<ProvidersFile>(&settings.providers_file)?,
        read_toml::<ModelsFile>(&settings.models_file)?,
    );
    apply_overrides(&mut catalog, settings);
    if source == ModelSource::Echo {
        answer_everything_with_echo(&mut catalog);
    }
    Ok(catalog)
}

fn read_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}

fn apply_overrides(catalog: &mut CatalogSpec, settings: &Settings) {
    if let (Some(base_url), Some(openai)) = (
        &settings.openai_base_url,
        catalog.providers.get_mut("openai"),
    ) {
        openai.base_url.clone_from(base_url);
    }
    if let (Some(model), Some(default)) = (&settings.model, catalog.profiles.get_mut("default")) {
        default.model.clone_from(model);
    }
    for provider in catalog.providers.values_mut() {
        if let Some(connect) = settings.provider_connect_timeout_ms {
            provider.connect_timeout_ms = connect;
        }
        if let Some(idle) = settings.provider_idle_timeout_ms {
            provider.idle_timeout_ms = idle;
            provider.first_byte_timeout_ms = idle;
        }
        if let Some(total) = settings.provider_timeout_ms {
            provider.total_timeout_ms = total;
        }
    }
}

/// Points every profile at one `echo` provider, so every agent's profile still resolves.
fn answer_everything_with_echo(catalog: &mut CatalogSpec) {
    let echo = ProviderSpec {
        kind: ProviderKind::Echo,
        base_url: String::new(),
        api_key_env: None,
        api_key_file: None,
        headers: BTreeMap::new(),
        connect_timeout_ms: 1_000,
        first_byte_timeout_ms: 1_000,
        idle_timeout_ms: 1_000,
        total_timeout_ms: 1_000,
    };
    catalog.providers = BTreeMap::from([(ECHO_MODEL.to_owned(), echo)]);
    for profile in catalog.profiles.values_mut() {
        profile.provider = ECHO_MODEL.to_owned();
        profile.model = ECHO_MODEL.to_owned();
        profile.fallbacks.clear();
    }
}

/// Each provider's key, from its `api_key_env` variable or `api_key_file`. A provider
/// without a key is allowed (local models); its calls go out unauthenticated.
pub fn read_keys(catalog: &CatalogSpec) -> anyhow::Result<BTreeMap<String, Secret>> {
    let mut keys = BTreeMap::new();
    for (name, provider) in &catalog.providers {
        let from_env = provider
            .api_key_env
            .as_deref()
            .and_then(|variable| std::env::var(variable).ok())
            .filter(|key| !key.is_empty());
        let from_file = match &provider.api_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!(
                            "providers.{name}.api_key_file: cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        if let Some(key) = from_env.or(from_file).filter(|key| !key.is_empty()) {
            keys.insert(name.clone(), Secret::new(key));
        }
    }
    Ok(keys)
}
