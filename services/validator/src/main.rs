use anyhow::Context;

use cdp_runtime::{shutdown, telemetry, Admin};
use cdp_validator::{check, run, Config, SERVICE};
use cdp_workspace::ReloadMetrics;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => {
            let passed = match check::run(&args[1..], &mut std::io::stdout()) {
                Ok(passed) => passed,
                Err(e) => {
                    eprintln!("cdp-validator check: {e:#}");
                    std::process::exit(2);
                }
            };
            std::process::exit(if passed { 0 } else { 1 });
        }
        Some("-h" | "--help") => {
            println!(
                "usage: cdp-validator            consume raw events (settings from CDP_* env)\n{}",
                check::USAGE
            );
            Ok(())
        }
        None => serve(),
        Some(other) => anyhow::bail!("unknown command {other:?}; try --help"),
    }
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = telemetry::init(SERVICE)?;
    let admin = Admin::new();
    let reload_metrics = ReloadMetrics::register(&admin.registry, "cdp_validator")?;
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
