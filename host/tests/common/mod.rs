//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

pub mod api;

use std::path::PathBuf;

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
