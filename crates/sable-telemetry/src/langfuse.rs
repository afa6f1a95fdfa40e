//! The Langfuse preset: `LANGFUSE_HOST` + keys become an OTLP target on
//! `<host>/api/public/otel/v1/traces` with Basic auth and the ingestion-version header,
//! and a turn's trace id becomes a link into the Langfuse UI.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;

use crate::OtlpTarget;

/// Langfuse's OTLP traces path under its host.
const TRACES_PATH: &str = "/api/public/otel/v1/traces";

/// Asks Langfuse to make OTLP-ingested data available at once (its v4 ingestion path).
const INGESTION_VERSION_HEADER: (&str, &str) = ("x-langfuse-ingestion-version", "4");

/// A Langfuse project to send traces to.
#[derive(Debug, Clone)]
pub struct LangfuseProject {
    /// `https://cloud.langfuse.com`, `http://localhost:3000`, …
    pub host: String,
    pub public_key: String,
    pub secret_key: String,
}

impl LangfuseProject {
    /// The OTLP target that sends spans to this project.
    pub fn otlp_target(&self, timeout: Duration) -> OtlpTarget {
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.public_key, self.secret_key));
        let headers = HashMap::from([
            ("Authorization".to_owned(), format!("Basic {credentials}")),
            (
                INGESTION_VERSION_HEADER.0.to_owned(),
                INGESTION_VERSION_HEADER.1.to_owned(),
            ),
        ]);
        OtlpTarget {
            traces_endpoint: format!("{}{TRACES_PATH}", self.host.trim_end_matches('/')),
            headers,
            timeout,
        }
    }

    /// Where a trace shows in the Langfuse UI: the project's trace page when the project
    /// id is known, else `/trace/<id>`, which Langfuse resolves to the project that holds
    /// the trace.
    pub fn trace_url(host: &str, project_id: Option<&str>, trace_id: &str) -> String {
        let host = host.trim_end_matches('/');
        match project_id {
            Some(project_id) => format!("{host}/project/{project_id}/traces/{trace_id}"),
            None => format!("{host}/trace/{trace_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_targets_the_otel_endpoint_with_basic_auth() {
        let project = LangfuseProject {
            host: "https://cloud.langfuse.com/".into(),
            public_key: "pk-lf-1".into(),
            secret_key: "sk-lf-2".into(),
        };
        let target = project.otlp_target(Duration::from_secs(5));
        assert_eq!(
            target.traces_endpoint,
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
        // base64("pk-lf-1:sk-lf-2")
        assert_eq!(
            target.headers["Authorization"],
            "Basic cGstbGYtMTpzay1sZi0y"
        );
        assert_eq!(target.headers["x-langfuse-ingestion-version"], "4");
    }

    #[test]
    fn trace_links_use_the_project_page_when_the_project_is_known() {
        assert_eq!(
            LangfuseProject::trace_url("https://lf.example/", Some("p1"), "abc"),
            "https://lf.example/project/p1/traces/abc"
        );
        assert_eq!(
            LangfuseProject::trace_url("https://lf.example", None, "abc"),
            "https://lf.example/trace/abc"
        );
    }
}
