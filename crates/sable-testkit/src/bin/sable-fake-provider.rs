//! Runs the fake OpenAI-compatible provider on its own, for trying Sable without an API
//! key: `sable-fake-provider [ADDR]` (default 127.0.0.1:9090). It echoes each message.

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let provider = sable_testkit::FakeProvider::start_on(addr.parse()?).await?;
    if let Some(latency) = std::env::var("SABLE_FAKE_LATENCY_MS")
        .ok()
        .and_then(|value| value.parse().ok())
    {
        provider.set_latency(Duration::from_millis(latency));
    }
    #[allow(clippy::print_stdout)]
    {
        println!("sable fake provider listening on {}", provider.base_url);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
