//! Reload on change, keeping the last good version.
//!
//! Polling the file's content (not inotify) is deliberate: a Kubernetes ConfigMap update swaps a
//! symlink two levels up, which file-system events on the file itself miss.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as channel;

use crate::{load, Loaded, WorkspaceError};

/// The current workspace; `borrow()` is cheap, `changed().await` wakes on each new version.
pub type WorkspaceRx = channel::Receiver<Arc<Loaded>>;

/// `<prefix>_workspace_reloads_total{outcome}` and `<prefix>_workspace_reload_failing` for one service.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    failing: IntGauge,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_workspace_reloads_total"),
                "Workspace reload attempts by outcome (ok, error). On error the last good version stays.",
            ),
            &["outcome"],
        )?;
        let failing = IntGauge::new(
            format!("{prefix}_workspace_reload_failing"),
            "1 while the workspace file on disk does not load and an older version is in use.",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(failing.clone()))?;
        Ok(ReloadMetrics { reloads, failing })
    }
}

/// Loads the document (an error here is a start-up error) and spawns a task that re-reads it every
/// `interval`, publishing each version that loads. The task ends when every receiver is dropped.
pub fn watch(
    path: PathBuf,
    interval: Duration,
    metrics: ReloadMetrics,
) -> Result<WorkspaceRx, WorkspaceError> {
    let first = load(&path)?;
    tracing::info!(path = %path.display(), digest = %first.digest,
        sources = first.workspace.sources.len(),
        destinations = first.workspace.destinations.len(), "workspace loaded");
    let (tx, rx) = channel::channel(Arc::new(first));
    tokio::spawn(poll(path, interval, tx, metrics));
    Ok(rx)
}

async fn poll(
    path: PathBuf,
    interval: Duration,
    tx: channel::Sender<Arc<Loaded>>,
    metrics: ReloadMetrics,
) {
    // Digest of the version last looked at, or its error, so a broken edit is reported once.
    let mut last_seen = tx.borrow().digest.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tx.closed() => {
                tracing::debug!("workspace watcher stopped: no receivers left");
                return;
            }
        }
        // Loading is cheap (a small YAML file and the plan files it names), and only a load sees a
        // change in a referenced plan file.
        let outcome = load(&path);
        let seen = match &outcome {
            Ok(next) => next.digest.clone(),
            Err(e) => format!("error: {e}"),
        };
        if seen == last_seen {
            continue;
        }
        last_seen = seen;
        let current = tx.borrow().digest.clone();
        match outcome {
            Ok(next) if next.digest == current => {
                // Restored to the version in use: nothing to publish, but no longer failing.
                metrics.failing.set(0);
            }
            Ok(next) => {
                tracing::info!(path = %path.display(), from = %current, to = %next.digest,
                    "workspace reloaded");
                metrics.reloads.with_label_values(&["ok"]).inc();
                metrics.failing.set(0);
                tx.send_replace(Arc::new(next));
            }
            Err(e) => {
                tracing::error!(path = %path.display(), keeping = %current, error = %e,
                    "workspace reload failed; keeping the last good version");
                metrics.reloads.with_label_values(&["error"]).inc();
                metrics.failing.set(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broken_edit_keeps_the_last_good_version_and_a_fix_is_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ws.yaml");
        std::fs::write(&path, "sources: [{id: web, write_key: k1}]\n").expect("write");
        let registry = Registry::new();
        let metrics = ReloadMetrics::register(&registry, "cdp_test").expect("metrics");
        let mut rx =
            watch(path.clone(), Duration::from_millis(20), metrics.clone()).expect("loads");
        assert_eq!(rx.borrow().workspace.sources[0].write_key.expose(), "k1");

        std::fs::write(&path, "sources: [{id: web, write_key: ''}]\n").expect("write");
        while metrics.reloads.with_label_values(&["error"]).get() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.failing.get(), 1);
        assert_eq!(
            rx.borrow_and_update().workspace.sources[0]
                .write_key
                .expose(),
            "k1"
        );

        std::fs::write(&path, "sources: [{id: web, write_key: k2}]\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("reload within 5 s")
            .expect("sender alive");
        assert_eq!(rx.borrow().workspace.sources[0].write_key.expose(), "k2");
        assert_eq!(metrics.failing.get(), 0);
    }
}
