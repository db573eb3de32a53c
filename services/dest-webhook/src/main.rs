use anyhow::Context;

use cdp_dest_webhook::{Webhook, SERVICE};
use cdp_destination::Config;
use cdp_runtime::{shutdown, telemetry, Admin};
use cdp_workspace::ReloadMetrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "-h" || arg == "--help" {
            println!("usage: cdp-dest-webhook   deliver CDP_DESTINATION_ID's events (settings from CDP_* env)");
            return Ok(());
        }
        anyhow::bail!("unknown argument {arg:?}; try --help");
    }
    let config = Config::from_env(SERVICE)?;
    let _telemetry = telemetry::init(SERVICE)?;
    let admin = Admin::new();
    let reload_metrics = ReloadMetrics::register(&admin.registry, "cdp_dest")?;
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
    cdp_destination::run::<Webhook>(SERVICE, config, workspace, &admin, shutdown.clone()).await?;
    shutdown.cancel();
    admin_task.await??;
    Ok(())
}
