use anyhow::Context;

use cdp_collector::{build, serve, Config, SERVICE};
use cdp_runtime::{shutdown, telemetry, Admin};
use cdp_workspace::ReloadMetrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = telemetry::init(SERVICE)?;
    let admin = Admin::new();
    let reload_metrics = ReloadMetrics::register(&admin.registry, "cdp_collector")?;
    let workspace = cdp_workspace::watch(
        config.common.workspace.clone(),
        config.common.workspace_poll,
        reload_metrics,
    )
    .with_context(|| format!("loading workspace {}", config.common.workspace.display()))?;
    let shutdown = shutdown::on_signal();

    // Not ready until topics exist, the producer is up and the API listens.
    admin.readiness.set("started", false);
    let admin_listener = Admin::bind(config.common.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", config.common.admin_addr))?;
    let admin_task = tokio::spawn(admin.clone().serve(admin_listener, shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let state = build(config, workspace, &admin).await?;
    tracing::info!(addr = %listener.local_addr()?, "collector listening");
    admin.readiness.set("started", true);

    serve(state, listener, shutdown.clone()).await?;
    shutdown.cancel();
    admin_task.await??;
    Ok(())
}
