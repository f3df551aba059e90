//! Following the module store: every replica LISTENs for changes (a push,
//! rollback or removal commits with a NOTIFY) and also polls, so a change
//! is live on every replica within moments, and a missed notification (a
//! dropped connection) within one poll interval.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Modules, ShadowRef};
use crate::storage::module_store::{CHANNEL, StoredModule};
use crate::storage::{Db, Listener};

/// How often a replica writes its shadows' counts to the store.
const SHADOW_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Reads the store's live versions and hands the changed ones to the
/// modules; components are fetched only for versions this replica does not
/// hold already. Returns whether anything changed.
pub async fn refresh(db: &Db, modules: &Arc<Modules>) -> anyhow::Result<bool> {
    let live = db.live_modules().await?;
    let held = modules.store_versions();
    let seen_shadows = modules.shadows_seen();
    let same_live = live.len() == held.len()
        && live.iter().zip(&held).all(|(l, h)| l.name == h.name && l.version == h.version && l.hash == h.hash);
    let wanted_shadows: Vec<ShadowRef> = live
        .iter()
        .filter_map(|l| {
            l.shadow.as_ref().map(|(version, hash)| ShadowRef {
                name: l.name.clone(),
                version: version.clone(),
                hash: hash.clone(),
            })
        })
        .collect();
    // Loaded or refused, a shadow the store still names is not fetched again.
    let same_shadows =
        wanted_shadows.len() == seen_shadows.len() && wanted_shadows.iter().all(|w| seen_shadows.contains(w));
    if same_live && same_shadows {
        return Ok(false);
    }
    let mut next: Vec<Arc<StoredModule>> = Vec::with_capacity(live.len());
    for l in &live {
        match held.iter().find(|h| h.name == l.name && h.version == l.version && h.hash == l.hash) {
            Some(h) => next.push(Arc::clone(h)),
            None => match db.fetch_module(&l.name, &l.version).await? {
                Some(m) => next.push(Arc::new(m)),
                None => {
                    tracing::warn!(module = %l.name, version = %l.version, "A live store version vanished while it was read.")
                }
            },
        }
    }
    let mut shadows: Vec<Arc<StoredModule>> = Vec::new();
    for wanted in wanted_shadows {
        if let Some(m) = db.fetch_module(&wanted.name, &wanted.version).await? {
            shadows.push(Arc::new(m));
        }
    }
    let m = Arc::clone(modules);
    tokio::task::spawn_blocking(move || m.set_store(next, shadows)).await?;
    Ok(true)
}

/// Writes what this replica's shadows have seen to the store, for
/// `modules diff`.
pub async fn report_shadows(db: &Db, modules: &Modules, replica: &str) -> anyhow::Result<()> {
    for shadow in modules.shadows() {
        let info = shadow.info();
        let samples = serde_json::to_string(&info.samples)?;
        db.report_shadow(
            &shadow.name,
            &shadow.version,
            replica,
            i64::try_from(info.records).unwrap_or(i64::MAX),
            i64::try_from(info.differing).unwrap_or(i64::MAX),
            &samples,
        )
        .await?;
    }
    Ok(())
}

/// Follows the store until `shutdown`: a refresh on every notification and
/// every `poll_interval`.
pub async fn watch_store(db: Db, modules: Arc<Modules>, poll_interval: Duration, shutdown: CancellationToken) {
    let replica = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id());
    let mut listener: Option<Listener> = None;
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Shadow counts reach `modules diff` within this.
    let mut report = tokio::time::interval(SHADOW_REPORT_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() {
            listener = match db.listen(CHANNEL).await {
                Ok(l) => Some(l),
                Err(error) => {
                    tracing::debug!(%error, "Cannot LISTEN for module store changes; polling.");
                    None
                }
            };
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = notified => {
                if let Err(error) = result {
                    tracing::debug!(%error, "Lost the module store notifications; reconnecting.");
                    listener = None;
                }
            }
            _ = poll.tick() => {}
            _ = report.tick() => {
                if let Err(error) = report_shadows(&db, &modules, &replica).await {
                    tracing::debug!(error = %format!("{error:#}"), "Cannot report shadow differences yet.");
                }
                continue;
            }
        }
        match refresh(&db, &modules).await {
            Ok(true) => tracing::info!("Module store changed; modules reloaded."),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "Cannot read the module store; keeping the live modules.")
            }
        }
    }
}
