//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

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
