//! Router tests: every route's refusals (status and `{"error":{"code","message"}}` body,
//! and that nothing was written), sent in-process with `oneshot` to the gateway's real
//! router on a fresh store and an in-process bus (`support::TestApp`), plus a few
//! successes that show the router is the real one. One module per route file of the
//! gateway; what crosses processes stays in the end-to-end tests of `tests/e2e/`.

/// Generates `sqlite::<name>` and `postgres::<name>` for each test body taking a
/// [`support::Backend`].
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::support::Backend::Sqlite).await
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}

mod agents;
mod approvals;
mod console;
mod cron;
mod diagnostics;
mod feishu;
mod health;
mod keys;
mod mcp;
mod mcp_servers;
mod messages;
mod openapi;
mod org_config;
mod permissions;
mod quotas;
mod router;
mod sessions;
mod support;
mod tools;
mod turns;
