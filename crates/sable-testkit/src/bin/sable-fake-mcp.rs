//! A fake MCP server for tests and trials: `sable-fake-mcp` speaks MCP on stdin/stdout;
//! `sable-fake-mcp --http ADDR` serves streamable HTTP on ADDR at `/mcp` and prints
//! `sable-fake-mcp listening on http://ADDR/mcp`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => sable_testkit::fake_mcp::serve_stdio().await,
        [flag, addr] if flag == "--http" => {
            let server = sable_testkit::FakeMcpServer::start_http_on(addr.parse()?).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("sable-fake-mcp listening on {}", server.url);
            }
            std::future::pending::<()>().await;
            Ok(())
        }
        _ => anyhow::bail!("usage: sable-fake-mcp [--http ADDR]"),
    }
}
