//! The module store: normalizer module versions every replica shares.
//! Each change commits with a `NOTIFY` on [`CHANNEL`], which every replica
//! listens to (and also polls), so a push is live across the fleet at once.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Db, DbError};

/// The channel a change is announced on; the payload is the module's name.
pub const CHANNEL: &str = "notification_host_modules";

/// One stored version of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModule {
    pub name: String,
    pub version: String,
    /// The manifest's text (its `component` and `samples` paths are not used:
    /// the store holds both).
    pub manifest: String,
    pub component: Vec<u8>,
    pub samples: Option<String>,
    /// The module's content hash, as the host computes it.
    pub hash: String,
}

/// Which version of a module is live, by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveModule {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// The version running in shadow beside it, and its hash.
    pub shadow: Option<(String, String)>,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// One entry of a module's history.
#[derive(Debug, Clone)]
pub struct ModuleEvent {
    pub action: String,
    pub version: Option<String>,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{name}@{version} is already stored with other content; give the new content a new version")]
    VersionExists { name: String, version: String },
    #[error("{name}@{version} is not in the store (stored versions: {stored})")]
    NoSuchVersion { name: String, version: String, stored: String },
    #[error("{0} is not live in the store")]
    NotInStore(String),
    #[error("{0} has no earlier version to roll back to")]
    NothingToRollBackTo(String),
    #[error("{0} has no live version in the store to run a shadow beside; push it live first")]
    NothingToShadow(String),
    #[error("{0} has no shadow version to promote")]
    NoShadow(String),
    #[error("the module store is unavailable: {0}")]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}

async fn notify(tx: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(name).execute(&mut *tx).await?;
    Ok(())
}

async fn event(
    tx: &mut sqlx::PgConnection,
    name: &str,
    action: &str,
    version: Option<&str>,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO normalizer_module_events (name, action, version, by_whom) VALUES ($1, $2, $3, $4)")
        .bind(name)
        .bind(action)
        .bind(version)
        .bind(by)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Stores a version unless it is stored already; the same name and version
/// with other content is refused.
async fn store_version(tx: &mut sqlx::PgConnection, module: &StoredModule, by: &str) -> Result<(), StoreError> {
    let existing: Option<String> =
        sqlx::query_scalar("SELECT hash FROM normalizer_module_versions WHERE name = $1 AND version = $2")
            .bind(&module.name)
            .bind(&module.version)
            .fetch_optional(&mut *tx)
            .await?;
    match existing {
        Some(hash) if hash != module.hash => {
            return Err(StoreError::VersionExists { name: module.name.clone(), version: module.version.clone() });
        }
        Some(_) => {}
        None => {
            sqlx::query(
                "INSERT INTO normalizer_module_versions (name, version, manifest, component, samples, hash, pushed_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&module.name)
            .bind(&module.version)
            .bind(&module.manifest)
            .bind(&module.component)
            .bind(&module.samples)
            .bind(&module.hash)
            .bind(by)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// One replica's count of a shadow's differences.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    pub replica: String,
    pub records: i64,
    pub differing: i64,
    /// JSON array of differing records (coordinates, both answers).
    pub samples: String,
    pub updated_at: DateTime<Utc>,
}

impl Db {
    /// Stores a version (already validated by the caller) and makes it live.
    /// Pushing the very same content again only makes it live.
    pub async fn push_module(&self, module: &StoredModule, by: &str) -> Result<(), StoreError> {
        let mut tx = self.admin.begin().await?;
        // One push per module at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(&module.name)
            .execute(&mut *tx)
            .await?;
        store_version(&mut tx, module, by).await?;
        Db::make_live(&mut tx, &module.name, &module.version, by).await?;
        event(&mut tx, &module.name, "push", Some(&module.version), by).await?;
        notify(&mut tx, &module.name).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn make_live(tx: &mut sqlx::PgConnection, name: &str, version: &str, by: &str) -> Result<(), sqlx::Error> {
        // A version made live is no longer its own shadow.
        sqlx::query("UPDATE normalizer_modules SET shadow_version = NULL WHERE name = $1 AND shadow_version = $2")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO normalizer_modules (name, version, changed_by) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, changed_by = excluded.changed_by, changed_at = now()",
        )
        .bind(name)
        .bind(version)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Stores a version (already validated) to run in shadow beside the live
    /// one: on live traffic, its answers compared and never stored.
    pub async fn push_shadow_module(&self, module: &StoredModule, by: &str) -> Result<(), StoreError> {
        let mut tx = self.admin.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(&module.name)
            .execute(&mut *tx)
            .await?;
        let live: Option<String> = sqlx::query_scalar("SELECT version FROM normalizer_modules WHERE name = $1")
            .bind(&module.name)
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_none() {
            return Err(StoreError::NothingToShadow(module.name.clone()));
        }
        store_version(&mut tx, module, by).await?;
        sqlx::query(
            "UPDATE normalizer_modules SET shadow_version = $2, changed_by = $3, changed_at = now() WHERE name = $1",
        )
        .bind(&module.name)
        .bind(&module.version)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM normalizer_shadow_reports WHERE name = $1 AND version = $2")
            .bind(&module.name)
            .bind(&module.version)
            .execute(&mut *tx)
            .await?;
        event(&mut tx, &module.name, "shadow", Some(&module.version), by).await?;
        notify(&mut tx, &module.name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the shadow version live. Returns it.
    pub async fn promote_module(&self, name: &str, by: &str) -> Result<String, StoreError> {
        let mut tx = self.admin.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))").bind(name).execute(&mut *tx).await?;
        let shadow: Option<Option<String>> =
            sqlx::query_scalar("SELECT shadow_version FROM normalizer_modules WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let version = shadow.flatten().ok_or_else(|| StoreError::NoShadow(name.to_owned()))?;
        sqlx::query(
            "UPDATE normalizer_modules SET version = shadow_version, shadow_version = NULL, changed_by = $2, changed_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        event(&mut tx, name, "promote", Some(&version), by).await?;
        notify(&mut tx, name).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Records what this replica saw of a shadow.
    pub async fn report_shadow(
        &self,
        name: &str,
        version: &str,
        replica: &str,
        records: i64,
        differing: i64,
        samples: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO normalizer_shadow_reports (name, version, replica, records, differing, samples)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, version, replica) DO UPDATE
             SET records = excluded.records, differing = excluded.differing, samples = excluded.samples, updated_at = now()",
        )
        .bind(name)
        .bind(version)
        .bind(replica)
        .bind(records)
        .bind(differing)
        .bind(samples)
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    /// The shadow version of `name` and every replica's report of it from the
    /// last ten minutes (a replica that stopped reports nothing newer).
    pub async fn shadow_reports(&self, name: &str) -> Result<Option<(String, Vec<ShadowReport>)>, DbError> {
        let shadow: Option<Option<String>> =
            sqlx::query_scalar("SELECT shadow_version FROM normalizer_modules WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.admin)
                .await?;
        let Some(version) = shadow.flatten() else { return Ok(None) };
        let reports = sqlx::query(
            "SELECT replica, records, differing, samples, updated_at FROM normalizer_shadow_reports
             WHERE name = $1 AND version = $2 AND updated_at > now() - interval '10 minutes' ORDER BY replica",
        )
        .bind(name)
        .bind(&version)
        .fetch_all(&self.admin)
        .await?
        .iter()
        .map(|r| ShadowReport {
            replica: r.get(0),
            records: r.get(1),
            differing: r.get(2),
            samples: r.get(3),
            updated_at: r.get(4),
        })
        .collect();
        Ok(Some((version, reports)))
    }

    /// Makes `version` live again, or (None) the version that was live before
    /// the current one. Returns the version now live.
    pub async fn rollback_module(&self, name: &str, version: Option<&str>, by: &str) -> Result<String, StoreError> {
        let mut tx = self.admin.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))").bind(name).execute(&mut *tx).await?;
        let current: Option<String> = sqlx::query_scalar("SELECT version FROM normalizer_modules WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let target = match version {
            Some(v) => v.to_owned(),
            None => {
                let current = current.clone().ok_or_else(|| StoreError::NotInStore(name.to_owned()))?;
                // The newest version made live before the current one that is
                // not the current one.
                sqlx::query_scalar::<_, String>(
                    "SELECT version FROM normalizer_module_events
                     WHERE name = $1 AND action IN ('push', 'rollback', 'promote') AND version <> $2
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(name)
                .bind(&current)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NothingToRollBackTo(name.to_owned()))?
            }
        };
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM normalizer_module_versions WHERE name = $1 AND version = $2)",
        )
        .bind(name)
        .bind(&target)
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            let stored: Vec<String> =
                sqlx::query_scalar("SELECT version FROM normalizer_module_versions WHERE name = $1 ORDER BY pushed_at")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await?;
            return Err(StoreError::NoSuchVersion {
                name: name.to_owned(),
                version: target,
                stored: if stored.is_empty() { "none".into() } else { stored.join(", ") },
            });
        }
        Db::make_live(&mut tx, name, &target, by).await?;
        event(&mut tx, name, "rollback", Some(&target), by).await?;
        notify(&mut tx, name).await?;
        tx.commit().await?;
        Ok(target)
    }

    /// Takes a module out of service (its versions stay, for history and a
    /// later rollback).
    pub async fn remove_module(&self, name: &str, by: &str) -> Result<(), StoreError> {
        let mut tx = self.admin.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))").bind(name).execute(&mut *tx).await?;
        let removed =
            sqlx::query("DELETE FROM normalizer_modules WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotInStore(name.to_owned()));
        }
        event(&mut tx, name, "remove", None, by).await?;
        notify(&mut tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live version of every module in the store, by name.
    pub async fn live_modules(&self) -> Result<Vec<LiveModule>, DbError> {
        let rows = sqlx::query(
            "SELECT m.name, m.version, v.hash, m.changed_by, m.changed_at, m.shadow_version, s.hash
             FROM normalizer_modules m
             JOIN normalizer_module_versions v USING (name, version)
             LEFT JOIN normalizer_module_versions s ON s.name = m.name AND s.version = m.shadow_version
             ORDER BY m.name",
        )
        .fetch_all(&self.admin)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LiveModule {
                name: r.get(0),
                version: r.get(1),
                hash: r.get(2),
                changed_by: r.get(3),
                changed_at: r.get(4),
                shadow: r.get::<Option<String>, _>(5).zip(r.get::<Option<String>, _>(6)),
            })
            .collect())
    }

    /// One stored version, with its component.
    pub async fn fetch_module(&self, name: &str, version: &str) -> Result<Option<StoredModule>, DbError> {
        let row = sqlx::query(
            "SELECT name, version, manifest, component, samples, hash FROM normalizer_module_versions
             WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.admin)
        .await?;
        Ok(row.map(|r| StoredModule {
            name: r.get(0),
            version: r.get(1),
            manifest: r.get(2),
            component: r.get(3),
            samples: r.get(4),
            hash: r.get(5),
        }))
    }

    /// A module's history, oldest first, and its stored versions.
    pub async fn module_history(
        &self,
        name: &str,
    ) -> Result<(Vec<ModuleEvent>, Vec<(String, String, DateTime<Utc>)>), DbError> {
        let events = sqlx::query(
            "SELECT action, version, by_whom, at FROM normalizer_module_events WHERE name = $1 ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.admin)
        .await?
        .iter()
        .map(|r| ModuleEvent { action: r.get(0), version: r.get(1), by: r.get(2), at: r.get(3) })
        .collect();
        let versions = sqlx::query(
            "SELECT version, pushed_by, pushed_at FROM normalizer_module_versions WHERE name = $1 ORDER BY pushed_at",
        )
        .bind(name)
        .fetch_all(&self.admin)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        Ok((events, versions))
    }
}
