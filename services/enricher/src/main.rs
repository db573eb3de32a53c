use anyhow::Context;

use cdp_enricher::{run, Config, SERVICE};
use cdp_runtime::{shutdown, telemetry, Admin};
use cdp_workspace::ReloadMetrics;

/// Each event is parsed into a JSON tree and written out again: a faster allocator than the
/// system's is worth about a fifth of the chain's time (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "-h" || a == "--help")
    {
        println!("usage: cdp-enricher   consume valid events (settings from CDP_* env; see services/enricher/README.md)");
        return Ok(());
    }
    let config = Config::from_env()?;
    let _telemetry = telemetry::init(SERVICE)?;
    let admin = Admin::new();
    let reload_metrics = ReloadMetrics::register(&admin.registry, "cdp_enricher")?;
    let workspace = cdp_workspace::watch(
        config.common.workspace.clone(),
        config.common.workspace_poll,
        reload_metrics,
    )
    .with_context(|| format!("loading workspace {}", config.common.workspace.display()))?;
    let shutdown = shutdown::on_signal();
    let admin_listener = Admin::bind(config.common.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", config.common.admin_addr))?;
    let admin_task = tokio::spawn(admin.clone().serve(admin_listener, shutdown.clone()));
    run(config, workspace, &admin, shutdown.clone()).await?;
    shutdown.cancel();
    admin_task.await??;
    Ok(())
}
