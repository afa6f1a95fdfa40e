//! The model client: calls a profile, retries what is worth retrying (backoff with
//! jitter, honouring `Retry-After`), fails over to the profile's fallbacks (resting a
//! failing profile for a cooldown), and records every attempt.
//!
//! Never retries or fails over once text reached the user: a second answer would
//! contradict the first.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use sable_core::Secret;
use tracing::Instrument;

use crate::catalog::{CatalogError, CatalogSpec, ProfileSpec, ProviderKind, RetrySpec};
use crate::{
    AnthropicConfig, AnthropicProvider, ChatProvider, ChatRequest, Completion, DeltaSink,
    EchoProvider, OpenAiConfig, OpenAiProvider, ProviderError, ProviderErrorKind, TokenUsage,
};

/// One call to one profile, as recorded on the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAttempt {
    pub profile: String,
    pub provider: String,
    pub provider_kind: &'static str,
    pub model: String,
    /// `ok`, or the error code.
    pub outcome: String,
    pub error_message: Option<String>,
    /// 0 for the first call to this profile, 1 for its first retry, and so on.
    pub retry_number: u32,
    /// Set when the next attempt went to another profile because of this one.
    pub failover_reason: Option<String>,
    pub started_at_unix_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    pub duration_ms: u64,
    pub usage: Option<TokenUsage>,
}

/// The result of a call and the attempts it took.
#[derive(Debug)]
pub struct CallReport {
    pub result: Result<Completion, ProviderError>,
    pub attempts: Vec<CallAttempt>,
    /// The profile that answered.
    pub answered_by: Option<String>,
}

/// What to do after a failed attempt.
enum Next {
    /// Wait, then call the same profile again.
    Retry(Duration),
    FailOver,
    Stop,
}

/// Every provider and profile of a deployment, with per-profile cooldowns.
#[derive(Debug)]
pub struct ModelClient {
    providers: BTreeMap<String, Arc<dyn ChatProvider>>,
    profiles: BTreeMap<String, ProfileSpec>,
    retry: RetrySpec,
    resting_until: Mutex<HashMap<String, Instant>>,
}

impl ModelClient {
    /// Builds one client per provider. `keys` maps provider names to their API keys.
    pub fn new(spec: &CatalogSpec, keys: &BTreeMap<String, Secret>) -> Result<Self, CatalogError> {
        spec.validate()?;
        let mut providers: BTreeMap<String, Arc<dyn ChatProvider>> = BTreeMap::new();
        for (name, provider) in &spec.providers {
            let headers: Vec<(String, String)> = provider.headers.clone().into_iter().collect();
            let api_key = keys.get(name).cloned();
            let built: Result<Arc<dyn ChatProvider>, ProviderError> = match provider.kind {
                ProviderKind::Openai => OpenAiProvider::new(OpenAiConfig {
                    base_url: provider.base_url.clone(),
                    api_key,
                    headers,
                    timeouts: provider.timeouts(),
                })
                .map(|built| Arc::new(built) as Arc<dyn ChatProvider>),
                ProviderKind::Anthropic => AnthropicProvider::new(AnthropicConfig {
                    base_url: provider.base_url.clone(),
                    api_key,
                    headers,
                    timeouts: provider.timeouts(),
                })
                .map(|built| Arc::new(built) as Arc<dyn ChatProvider>),
                ProviderKind::Echo => Ok(Arc::new(EchoProvider) as Arc<dyn ChatProvider>),
            };
            providers.insert(
                name.clone(),
                built.map_err(|error| CatalogError(format!("providers.{name}: {error}")))?,
            );
        }
        Ok(Self {
            providers,
            profiles: spec.profiles.clone(),
            retry: spec.retry,
            resting_until: Mutex::default(),
        })
    }

    pub fn profile(&self, name: &str) -> Option<&ProfileSpec> {
        self.profiles.get(name)
    }

    /// Calls `profile` (then its fallbacks), streaming text to `on_delta`.
    pub async fn complete(
        &self,
        profile: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> CallReport {
        let mut attempts = Vec::new();
        let mut last_error = ProviderError::new(
            ProviderErrorKind::InvalidRequest,
            format!("no model profile named '{profile}'"),
        );
        let chain = self.chain(profile);
        for (position, name) in chain.iter().enumerate() {
            let mut backoff = self.backoff();
            for retry_number in 0.. {
                let (result, attempt) = self
                    .attempt(name, request, &mut *on_delta, retry_number)
                    .await;
                attempts.push(attempt);
                let error = match result {
                    Ok(completion) => {
                        self.resting_until
                            .lock()
                            .expect("cooldown lock")
                            .remove(name);
                        return CallReport {
                            result: Ok(completion),
                            attempts,
                            answered_by: Some(name.clone()),
                        };
                    }
                    Err(error) => error,
                };
                match self.next_step(&error, &mut backoff) {
                    Next::Retry(delay) => tokio::time::sleep(delay).await,
                    Next::Stop => {
                        return CallReport {
                            result: Err(error),
                            attempts,
                            answered_by: None,
                        };
                    }
                    Next::FailOver => {
                        self.rest(name);
                        if position + 1 < chain.len() {
                            attempts.last_mut().expect("just pushed").failover_reason =
                                Some(error.code().to_owned());
                        }
                        last_error = error;
                        break;
                    }
                }
            }
        }
        CallReport {
            result: Err(last_error),
            attempts,
            answered_by: None,
        }
    }

    /// The profile and its fallbacks, those resting last (they are still tried when
    /// nothing else is left).
    fn chain(&self, profile: &str) -> Vec<String> {
        let Some(spec) = self.profiles.get(profile) else {
            return Vec::new();
        };
        let mut chain = vec![profile.to_owned()];
        chain.extend(
            spec.fallbacks
                .iter()
                .filter(|name| self.profiles.contains_key(*name) && *name != profile)
                .cloned(),
        );
        let now = Instant::now();
        let resting = self.resting_until.lock().expect("cooldown lock");
        let is_resting = |name: &String| resting.get(name).is_some_and(|until| *until > now);
        let (mut ready, cooling): (Vec<String>, Vec<String>) =
            chain.into_iter().partition(|name| !is_resting(name));
        ready.extend(cooling);
        ready
    }

    fn rest(&self, profile: &str) {
        let until = Instant::now() + Duration::from_millis(self.retry.cooldown_ms);
        self.resting_until
            .lock()
            .expect("cooldown lock")
            .insert(profile.to_owned(), until);
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.base_delay_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_delay_ms))
            .with_max_times(self.retry.max_retries as usize)
            .with_jitter()
            .build()
    }

    fn next_step(
        &self,
        error: &ProviderError,
        backoff: &mut impl Iterator<Item = Duration>,
    ) -> Next {
        if error.partial_output {
            return Next::Stop;
        }
        match error.kind {
            ProviderErrorKind::Auth
            | ProviderErrorKind::InvalidRequest
            | ProviderErrorKind::Protocol
            | ProviderErrorKind::ContextOverflow => Next::Stop,
            // Waiting out a whole total timeout again rarely helps; another profile might.
            ProviderErrorKind::Timeout => Next::FailOver,
            ProviderErrorKind::RateLimited
            | ProviderErrorKind::Server
            | ProviderErrorKind::Unreachable => {
                let Some(delay) = backoff.next() else {
                    return Next::FailOver;
                };
                match error.retry_after {
                    Some(wait) if wait > Duration::from_millis(self.retry.max_retry_after_ms) => {
                        Next::FailOver
                    }
                    Some(wait) => Next::Retry(wait),
                    None => Next::Retry(delay),
                }
            }
        }
    }

    async fn attempt(
        &self,
        name: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
        retry_number: u32,
    ) -> (Result<Completion, ProviderError>, CallAttempt) {
        let profile = &self.profiles[name];
        let provider = &self.providers[&profile.provider];
        let request = with_profile_limits(request, profile);
        let started = Instant::now();
        let mut first_token: Option<Duration> = None;
        let mut timed_sink = |text: &str| {
            first_token.get_or_insert_with(|| started.elapsed());
            on_delta(text);
        };
        let span = crate::span::attempt_span(provider.kind(), name, &profile.model, retry_number);
        let result = provider
            .stream_chat(&profile.model, &request, &mut timed_sink)
            .instrument(span.clone())
            .await;
        crate::span::record_result(&span, &result);
        let attempt = CallAttempt {
            profile: name.to_owned(),
            provider: profile.provider.clone(),
            provider_kind: provider.kind(),
            model: profile.model.clone(),
            outcome: result
                .as_ref()
                .map_or_else(|error| error.code().to_owned(), |_| "ok".to_owned()),
            error_message: result.as_ref().err().map(|error| error.message.clone()),
            retry_number,
            failover_reason: None,
            started_at_unix_ms: unix_ms(
                SystemTime::now()
                    .checked_sub(started.elapsed())
                    .unwrap_or(UNIX_EPOCH),
            ),
            time_to_first_token_ms: first_token.map(millis),
            duration_ms: millis(started.elapsed()),
            usage: result.as_ref().ok().and_then(|completion| completion.usage),
        };
        (result, attempt)
    }
}

fn with_profile_limits<'a>(
    request: &'a ChatRequest,
    profile: &ProfileSpec,
) -> Cow<'a, ChatRequest> {
    match (request.max_output_tokens, profile.max_output_tokens) {
        (None, Some(limit)) => Cow::Owned(ChatRequest {
            max_output_tokens: Some(limit),
            ..request.clone()
        }),
        _ => Cow::Borrowed(request),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}
