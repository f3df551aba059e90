//! Compiled components the host loads without compiling them again: the
//! output of its own compiler process, and entries of its module cache.
//!
//! wasmtime loads such bytes as native code and checks only that they were
//! made by a compatible engine, not that they are what was made: a
//! corrupted or altered file would be executed. So every artifact is sealed
//! with an HMAC-SHA256 tag over its bytes under a key, and [`Trusted`] (the
//! only way to load one) exists only for bytes compiled in this process or
//! whose tag verified under the key they were sealed with. The key is the
//! host's own secret for its compiler process, and `MODULE_CACHE_KEY` (or
//! [`Key::PUBLIC`], which detects corruption but not a forger) for the
//! cache.
//!
//! This is the only place the host calls `Component::deserialize`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Component;

/// What starts a sealed artifact: a name and a format version.
const MAGIC: &[u8; 8] = b"NHMC\x00\x00\x00\x01";
const TAG_BYTES: usize = 32;

/// A key artifacts are sealed and opened with.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key everyone knows: its tags detect a corrupted or truncated
    /// entry, not one made by someone who can write the cache.
    pub const PUBLIC: Key = Key(*b"notification-host cache, no key!");

    /// A key from secret material of any length (hashed to 32 bytes).
    pub fn from_secret(secret: &[u8]) -> Key {
        use sha2::Digest as _;
        let mut hasher = Sha256::new();
        hasher.update(b"notification-host artifact key\0");
        hasher.update(secret);
        Key(hasher.finalize().into())
    }

    /// The key as hex, to hand to a child process.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key from [`Key::to_hex`]'s text.
    pub fn from_hex(text: &str) -> Option<Key> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            key[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(Key(key))
    }

    fn tag(&self, artifact: &[u8]) -> [u8; TAG_BYTES] {
        // HMAC takes a key of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(MAGIC);
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }
}

/// Why sealed bytes were not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("not a sealed artifact (no header)")]
    NoHeader,
    #[error("the artifact's tag does not verify: it was changed after it was sealed, or sealed with another key")]
    BadTag,
}

/// `artifact` sealed under `key`: the header, the tag, the bytes.
pub fn seal(key: &Key, artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + TAG_BYTES + artifact.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.tag(artifact));
    out.extend_from_slice(artifact);
    out
}

/// A compiled component's bytes that may be loaded: compiled by this
/// process, or opened from a seal whose tag verified.
pub struct Trusted(Vec<u8>);

impl Trusted {
    /// Compiles `wasm` in this process.
    pub fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Trusted> {
        engine.precompile_component(wasm).map(Trusted)
    }

    /// The artifact inside `sealed`, when its tag verifies under `key`.
    pub fn open(key: &Key, sealed: &[u8]) -> Result<Trusted, Untrusted> {
        let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or(Untrusted::NoHeader)?;
        if rest.len() < TAG_BYTES {
            return Err(Untrusted::NoHeader);
        }
        let (tag, artifact) = rest.split_at(TAG_BYTES);
        if !bool::from(key.tag(artifact).ct_eq(tag)) {
            return Err(Untrusted::BadTag);
        }
        Ok(Trusted(artifact.to_vec()))
    }

    /// The artifact's bytes (to seal them for the cache).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Loads the component. wasmtime refuses an artifact of another engine
    /// version or configuration with an error.
    pub fn load(&self, engine: &Engine) -> wasmtime::Result<Component> {
        // SAFETY: `Component::deserialize` requires bytes produced by
        // `Engine::precompile_component` (or `Component::serialize`) that
        // were not altered since. A `Trusted` holds either the output of
        // `precompile_component` in this process (`Trusted::compile`), or
        // bytes whose HMAC-SHA256 tag verified under the key they were sealed
        // with (`Trusted::open`); sealing happens only right after
        // `precompile_component`, in this host or the compiler process it
        // spawns from its own executable. wasmtime itself checks that the
        // engine that compiled them is compatible with `engine`.
        unsafe { Component::deserialize(engine, &self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_opens_only_unchanged_and_under_its_key() {
        let key = Key::from_secret(b"k");
        let sealed = seal(&key, b"artifact bytes");
        assert_eq!(Trusted::open(&key, &sealed).map(|t| t.0).ok(), Some(b"artifact bytes".to_vec()));
        assert_eq!(Trusted::open(&Key::PUBLIC, &sealed).err(), Some(Untrusted::BadTag));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(Trusted::open(&key, &flipped).err(), Some(Untrusted::BadTag));
        assert_eq!(Trusted::open(&key, &sealed[..sealed.len() - 1]).err(), Some(Untrusted::BadTag));
        assert_eq!(Trusted::open(&key, b"NHMC").err(), Some(Untrusted::NoHeader));
        assert_eq!(Key::from_hex(&key.to_hex()).map(|k| k.0), Some(key.0));
        assert!(Key::from_hex("zz").is_none());
    }
}
