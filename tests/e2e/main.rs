//! End-to-end tests: real `sable` processes against a private NATS server, a fresh
//! Postgres database and the fake provider, driven through the public HTTP API.

mod support;

mod admin;
mod agent_runtime;
mod audit;
mod bad_input;
mod console;
mod crash_recovery;
mod cron;
mod deploy;
mod diagnostics;
mod embedded;
mod faults;
mod feishu;
mod feishu_ws;
mod hostile_clients;
mod idempotency;
mod mcp;
mod mcp_server;
mod metrics;
mod openai;
mod ordering;
mod outages;
mod provider_failures;
mod provider_layer;
mod quickstart;
mod quotas;
mod readme;
mod schemathesis;
mod shutdown;
mod tenancy;
mod tracing;
