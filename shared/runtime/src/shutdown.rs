//! Graceful shutdown on SIGINT or SIGTERM (what Kubernetes sends before SIGKILL).

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                    wait_ctrl_c(ctrl_c).await;
                }
            }
        }
        #[cfg(not(unix))]
        wait_ctrl_c(ctrl_c).await;
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}

async fn wait_ctrl_c(ctrl_c: impl std::future::Future<Output = std::io::Result<()>>) {
    if let Err(e) = ctrl_c.await {
        tracing::warn!(error = %e, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}
