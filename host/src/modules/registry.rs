//! The registry's parts: the live entries in routing order, where each
//! came from, and what `GET /normalizers` shows of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::manifest::Manifest;
use super::module::Module;
use super::quarantine::ModuleStats;
use super::routing::Route;
use super::shadow::ShadowInfo;
use crate::storage::module_store::StoredModule;

/// One live module version.
pub(super) struct Entry {
    /// What names its source.
    pub key: SourceKey,
    /// Where it came from.
    pub source: Source,
    pub manifest: Manifest,
    /// The content hash ([`super::content_hash`]).
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    pub route: Route,
    pub module: Arc<Module>,
    pub stats: ModuleStats,
}

/// A module that was refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub manifest: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The live set of modules, in routing order.
#[derive(Default)]
pub(super) struct Registry {
    pub entries: Vec<Arc<Entry>>,
}

impl Rejection {
    pub(super) fn new(key: &SourceKey, reason: String) -> Rejection {
        Rejection { manifest: key.to_string(), reason, at: Utc::now() }
    }
}

/// What names a module's source in rejections, samples reports and
/// `GET /normalizers`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKey {
    /// A manifest in the modules directory.
    File(PathBuf),
    /// A module's live version in the module store, by name.
    Store(String),
    /// A module's shadow version in the module store, by name.
    Shadow(String),
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKey::File(path) => write!(f, "{}", path.display()),
            SourceKey::Store(name) => write!(f, "store:{name}"),
            SourceKey::Shadow(name) => write!(f, "store-shadow:{name}"),
        }
    }
}

/// A shadow version the module store names: loaded or refused, it is not
/// fetched again while the store names the same content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRef {
    pub name: String,
    pub version: String,
    pub hash: String,
}

impl ShadowRef {
    pub fn of(m: &StoredModule) -> ShadowRef {
        ShadowRef { name: m.name.clone(), version: m.version.clone(), hash: m.hash.clone() }
    }
}

/// What `GET /normalizers` reports of one module.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// The contract version the component implements.
    pub contract: String,
    pub manifest: String,
    pub routes: Vec<String>,
    pub header: Option<String>,
    /// The key glob of `[match]`, if any.
    pub key: Option<String>,
    /// The value's member rules of `[match]`, as `path op value`.
    pub fields: Vec<String>,
    pub fallback: bool,
    pub loaded_at: DateTime<Utc>,
    pub calls: u64,
    pub errors: u64,
    pub quarantined: bool,
    /// Times the breaker opened, and times a trial batch closed it again.
    pub quarantines: u64,
    pub recoveries: u64,
    pub last_error: Option<String>,
    /// The limits its calls run under.
    pub memory_bytes: usize,
    pub deadline_ms: u64,
    pub max_output_bytes: usize,
    /// A version running in shadow beside this one, and what it changed.
    pub shadow: Option<ShadowInfo>,
}

/// Where a module comes from.
#[derive(Clone)]
pub(super) enum Source {
    /// A manifest in the modules directory, with files beside it.
    File(PathBuf),
    /// A version in the module store.
    Stored(Arc<StoredModule>),
}

impl Source {
    /// What names it in rejections, reports and `GET /normalizers`.
    pub fn key(&self) -> SourceKey {
        match self {
            Source::File(path) => SourceKey::File(path.clone()),
            Source::Stored(m) => SourceKey::Store(m.name.clone()),
        }
    }

    /// Its place in the routing order.
    pub fn order(&self) -> String {
        match self {
            Source::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Source::Stored(m) => format!("{}.toml", m.name),
        }
    }
}

/// What the gate made of a source.
pub(super) enum Prepared {
    Unchanged(Arc<Entry>),
    New(Box<Entry>),
}

pub(super) fn info(e: &Entry) -> ModuleInfo {
    ModuleInfo {
        name: e.manifest.name.clone(),
        version: e.manifest.version.clone(),
        hash: e.hash.clone(),
        contract: e.module.component.contract().to_owned(),
        manifest: e.key.to_string(),
        routes: e.manifest.rules.topics.clone(),
        header: e.manifest.rules.header.clone(),
        key: e.manifest.rules.key.clone(),
        fields: e.manifest.rules.describe_fields(),
        fallback: e.manifest.fallback,
        loaded_at: e.loaded_at,
        calls: e.stats.calls.load(Ordering::Relaxed),
        errors: e.stats.errors.load(Ordering::Relaxed),
        quarantined: e.stats.quarantined_at.lock().ok().is_some_and(|q| q.is_some()),
        quarantines: e.stats.quarantines.load(Ordering::Relaxed),
        recoveries: e.stats.recoveries.load(Ordering::Relaxed),
        last_error: e.stats.last_error.lock().ok().and_then(|l| l.clone()),
        memory_bytes: e.module.component.limits().memory_bytes,
        deadline_ms: u64::try_from(e.module.component.limits().deadline.as_millis()).unwrap_or(u64::MAX),
        max_output_bytes: e.module.component.limits().max_output_bytes,
        shadow: None,
    }
}
