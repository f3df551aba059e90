//! Reloading the modules directory when it changes.
//!
//! Two triggers, either of which is enough: filesystem events (notify) on the
//! directory itself, so writes in place, atomic renames and Kubernetes
//! ConfigMap updates (which swap the `..data` symlink inside the directory)
//! are all seen at once; and a poll of the files' sizes and modification
//! times, for filesystems that send no events (some network and overlay
//! mounts). Either only signals; the reload itself runs on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Modules;

/// Events closer together than this make one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Loads the directory once, then reloads it on every change until
/// `shutdown` fires.
pub async fn watch(modules: Arc<Modules>, poll_interval: Duration, shutdown: CancellationToken) {
    let Some(dir) = modules.dir().map(Path::to_path_buf) else { return };
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let events_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events_tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "No filesystem events for the modules directory; polling only.");
            None
        }
    };

    let mut fingerprint = snapshot(&dir);
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {
                let now = snapshot(&dir);
                if now == fingerprint {
                    continue;
                }
            }
        }
        fingerprint = snapshot(&dir);
        let m = modules.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || m.reload()).await {
            tracing::error!(%error, "Reloading the modules failed.");
        }
    }
}

/// Name, size and modification time of every entry (links followed).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    let meta = std::fs::metadata(&path).ok();
                    (path, meta.as_ref().map_or(0, |m| m.len()), meta.and_then(|m| m.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}
