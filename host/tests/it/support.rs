//! What the host's integration tests share: the migrations, record builders,
//! the built components and sample files, and seeded noise.

pub mod api;

use std::path::{Path, PathBuf};

use notification_host::record::{Header, Record};

/// The migrations every database test starts from.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A record of `topic` at `offset` holding `value`, on partition 0, with no
/// timestamp, key or headers; [`RecordExt`] adds them.
pub fn record(topic: &str, offset: i64, value: impl AsRef<[u8]>) -> Record {
    Record {
        topic: topic.into(),
        partition: 0,
        offset,
        timestamp: None,
        key: None,
        headers: Vec::new(),
        value: Some(value.as_ref().to_vec()),
    }
}

/// Builder steps on a [`record`].
pub trait RecordExt {
    /// With this Kafka timestamp (milliseconds since the epoch).
    fn at(self, millis: i64) -> Record;
    /// With this key.
    fn keyed(self, key: &[u8]) -> Record;
    /// With one more header.
    fn header(self, name: &str, value: &[u8]) -> Record;
    /// On this partition.
    fn on_partition(self, partition: i32) -> Record;
}

impl RecordExt for Record {
    fn at(mut self, millis: i64) -> Record {
        self.timestamp = Some(millis);
        self
    }

    fn keyed(mut self, key: &[u8]) -> Record {
        self.key = Some(key.to_vec());
        self
    }

    fn header(mut self, name: &str, value: &[u8]) -> Record {
        self.headers.push(Header::new(name, Some(value.to_vec())));
        self
    }

    fn on_partition(mut self, partition: i32) -> Record {
        self.partition = partition;
        self
    }
}

/// A built normalizer component, e.g. `component("normalizer_default")`.
/// scripts/test builds them and exports NORMALIZER_WASM_DIR.
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("NORMALIZER_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/release")));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the components first (scripts/test does), or set NORMALIZER_WASM_DIR",
        path.display()
    );
    path
}

/// A file of the shared golden samples.
pub fn samples(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/samples")).join(name)
}

/// xorshift64 noise from `seed`: deterministic, so a failing case is
/// reproduced by its seed.
pub fn noise(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// `len` hex digits of noise: text PostgreSQL's compression cannot shrink
/// under an index entry's limit, like a token or a stack trace pasted into an
/// id field.
pub fn incompressible(len: usize, seed: u64) -> String {
    noise(seed).take(len).map(|x| char::from_digit((x % 16) as u32, 16).unwrap_or('0')).collect()
}

/// Every `.rs` file under `dir`, depth first (build output in `target/`
/// left out): what the tests that read the sources themselves walk.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
