//! Module manifests: the `*.toml` beside a component that names it, says
//! which records it serves and what limits it runs under, and the files
//! they point to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::Limits;

/// A module manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The component file, relative to the manifest.
    pub component: PathBuf,
    /// Golden samples (the `notification-host normalize` format) that must
    /// all pass before the module goes live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<PathBuf>,
    /// Fill the fields the module leaves null from the built-in default.
    #[serde(default)]
    pub fallback: bool,
    #[serde(rename = "match")]
    pub rules: MatchRules,
    /// The module's own sandbox limits, within the host's maxima.
    #[serde(default)]
    pub limits: ManifestLimits,
}

impl Manifest {
    /// A manifest for `component` serving `topics`, with no samples, no
    /// fallback, no other rules and the host's default limits; the fields
    /// are public for the rest.
    pub fn new(name: &str, version: &str, component: impl Into<PathBuf>, topics: &[&str]) -> Manifest {
        Manifest {
            name: name.to_owned(),
            version: version.to_owned(),
            component: component.into(),
            samples: None,
            fallback: false,
            rules: MatchRules {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                header: None,
                key: None,
                fields: BTreeMap::new(),
            },
            limits: ManifestLimits::default(),
        }
    }

    /// The manifest as the TOML a module ships.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// Limits a manifest may set for its module; each absent one is the
/// host's default (`MODULE_MEMORY_LIMIT`, `MODULE_DEADLINE`,
/// `MODULE_MAX_OUTPUT`), and none may exceed the host's maximum.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Linear memory one instance may grow to, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Wall-clock time one call may take, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Total bytes of the strings one record's answer may carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

impl ManifestLimits {
    /// The limits a module runs under: its own where it sets them, else
    /// `defaults`; an error names every limit above `maxima`.
    pub fn resolve(&self, defaults: Limits, maxima: Limits) -> Result<Limits, String> {
        let mut limits = defaults;
        let mut over = Vec::new();
        if let Some(mib) = self.memory_mib {
            let bytes = usize::try_from(mib).ok().and_then(|m| m.checked_mul(1 << 20)).unwrap_or(usize::MAX);
            if bytes > maxima.memory_bytes || mib == 0 {
                over.push(format!(
                    "limits.memory_mib = {mib} is not within 1..={} (MODULE_MEMORY_MAX)",
                    maxima.memory_bytes >> 20
                ));
            }
            limits.memory_bytes = bytes;
        }
        if let Some(ms) = self.deadline_ms {
            let deadline = Duration::from_millis(ms);
            if deadline > maxima.deadline || ms == 0 {
                over.push(format!(
                    "limits.deadline_ms = {ms} is not within 1..={} (MODULE_DEADLINE_MAX)",
                    maxima.deadline.as_millis()
                ));
            }
            limits.deadline = deadline;
        }
        if let Some(bytes) = self.max_output_bytes {
            if bytes > maxima.max_output_bytes {
                over.push(format!(
                    "limits.max_output_bytes = {bytes} is above the host's {} (MODULE_MAX_OUTPUT)",
                    maxima.max_output_bytes
                ));
            }
            limits.max_output_bytes = bytes;
        }
        if over.is_empty() { Ok(limits) } else { Err(over.join("; ")) }
    }
}

/// Which records a module serves: all of its rules must hold.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MatchRules {
    /// Topic globs, or regular expressions written `re:<regex>`.
    pub topics: Vec<String>,
    /// `name=value`: a header the record must carry (first occurrence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A glob the record's key (as UTF-8 text) must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Members of the record's JSON value, by dotted path (`source`,
    /// `payload.sourceService`, `data.type`): a string is an exact value; a
    /// table says `equals`, `glob` or `present`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldRule>,
}

impl MatchRules {
    /// The value's member rules as `path op value`, for people.
    pub fn describe_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .map(|(path, rule)| match rule {
                FieldRule::Equals(v) | FieldRule::Spec(FieldSpec { equals: Some(v), .. }) => format!("{path} = {v:?}"),
                FieldRule::Spec(FieldSpec { glob: Some(g), .. }) => format!("{path} glob {g:?}"),
                FieldRule::Spec(FieldSpec { present, .. }) => format!("{path} present = {}", present.unwrap_or(true)),
            })
            .collect()
    }
}

/// What a member of the value must be.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum FieldRule {
    /// Exactly this (a string member, or a number or boolean written so).
    Equals(String),
    /// `{ equals = "..." }`, `{ glob = "..." }` or `{ present = true|false }`.
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Present and not null (true), or absent or null (false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The `name` a manifest file declares, if it can be read.
pub(super) fn manifest_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    toml::from_str::<Manifest>(&text).ok().map(|m| m.name)
}

/// A manifest's text, its component's bytes and its samples' text.
pub fn read_module_files(path: &Path) -> Result<(String, Vec<u8>, Option<String>), String> {
    let manifest_text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the manifest: {e}"))?;
    let manifest: Manifest = toml::from_str(&manifest_text).map_err(|e| format!("invalid manifest: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let component_path = base.join(&manifest.component);
    let bytes = std::fs::read(&component_path)
        .map_err(|e| format!("cannot read the component {}: {e}", component_path.display()))?;
    let samples_text = match &manifest.samples {
        Some(s) => Some(
            std::fs::read_to_string(base.join(s))
                .map_err(|e| format!("cannot read the samples {}: {e}", s.display()))?,
        ),
        None => None,
    };
    Ok((manifest_text, bytes, samples_text))
}

/// First 32 hex digits (128 bits) of the SHA-256 of a module's component,
/// manifest and samples, each prefixed by its length so that no two
/// different triples hash alike: what tells one version's content from
/// another's.
pub fn content_hash(component: &[u8], manifest: &str, samples: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [component, manifest.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    match samples {
        Some(text) => {
            hasher.update([1]);
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_written_by_to_toml_read_back() {
        let mut m = Manifest::new("a", "1.0.0", "a.wasm", &["order_*"]);
        m.fallback = true;
        m.rules.fields.insert("source".into(), FieldRule::Equals("x".into()));
        m.limits.deadline_ms = Some(10);
        assert_eq!(toml::from_str::<Manifest>(&m.to_toml().unwrap()).unwrap(), m);
    }

    #[test]
    fn manifests_parse_strictly() {
        let m: Manifest = toml::from_str(
            "name = \"a\"\nversion = \"1.2.0\"\ncomponent = \"a.wasm\"\nfallback = true\n[match]\ntopics = [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(m.name, "a");
        assert!(m.fallback);
        assert!(
            toml::from_str::<Manifest>(
                "name = \"a\"\nversion = \"1\"\ncomponent = \"a.wasm\"\nsurprise = 1\n[match]\ntopics = [\"*\"]\n"
            )
            .is_err()
        );
    }
}
