//! Compiling a component within a budget, and the cache of compiled ones.
//!
//! A component is compiled by Cranelift, whose time and memory grow with the
//! code it is given: a pushed module could be made to need gigabytes, or
//! minutes, and a replica compiling it in-process would be killed by its
//! memory limit (a push is judged by the replica that receives it). So
//! `serve` and the commands compile in a child process of the host's own
//! executable (`notification-host compile-module`), whose address space is
//! capped (`MODULE_COMPILE_MEMORY`) and which is killed past
//! `MODULE_COMPILE_TIMEOUT`; a component over either budget is refused with
//! the reason, and the replica goes on.
//!
//! The child seals what it compiled under a key only this process knows
//! (see `notification-artifact`), so the parent loads nothing it did not
//! ask for. Compiled components are kept in the cache directory, sealed
//! under `MODULE_CACHE_KEY`; an entry that does not verify is compiled again
//! (and replaced), never loaded.

use std::hash::{Hash as _, Hasher as _};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use notification_artifact::{Key, Trusted, seal};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;

use super::LoadError;

/// The environment variable that hands the child its sealing key.
pub const COMPILE_KEY_ENV: &str = "NOTIFICATION_HOST_COMPILE_KEY";

/// Where components are compiled.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In this process, unbounded: for tools and tests that load only the
    /// project's own components.
    InProcess,
    /// In a child process of `exe` (this host's executable) with a capped
    /// address space and a deadline.
    Child {
        /// The `notification-host` executable.
        exe: PathBuf,
        /// The child's address-space limit, in bytes.
        memory_bytes: u64,
        /// How long the child may take.
        timeout: Duration,
    },
}

/// Where compiled components are kept between loads, and the key their
/// entries are sealed with.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The directory (created when missing).
    pub dir: PathBuf,
    /// `MODULE_CACHE_KEY`'s key, or [`Key::PUBLIC`].
    pub key: Key,
}

/// Compiles `wasm` for `engine` as `compiler` says, through `cache`.
pub(super) fn compiled(
    engine: &Engine,
    compiler: &Compiler,
    cache: Option<&Cache>,
    wasm: &[u8],
) -> Result<wasmtime::component::Component, LoadError> {
    let entry = cache.map(|c| (c, c.dir.join(format!("{}.nhm", entry_name(engine, wasm)))));
    if let Some((cache, path)) = &entry
        && let Ok(sealed) = std::fs::read(path)
    {
        match Trusted::open(&cache.key, &sealed) {
            Ok(trusted) => match trusted.load(engine) {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(entry = %path.display(), error = %format!("{error:#}"), "A module cache entry does not load; compiling again.")
                }
            },
            Err(why) => {
                tracing::warn!(entry = %path.display(), %why, "A module cache entry does not verify; compiling again, never loading it.")
            }
        }
    }
    let trusted = match compiler {
        Compiler::InProcess => Trusted::compile(engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?,
        Compiler::Child { exe, memory_bytes, timeout } => in_child(exe, *memory_bytes, *timeout, wasm)?,
    };
    let component = trusted.load(engine).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if let Some((cache, path)) = entry
        && let Err(error) = store_entry(&cache.dir, &path, &seal(&cache.key, trusted.bytes()))
    {
        tracing::debug!(dir = %cache.dir.display(), %error, "Cannot write the module cache; modules compile on every load.");
    }
    Ok(component)
}

/// The cache entry's name: the component's SHA-256 and the engine's
/// compatibility (version and settings), so another host version never
/// finds this one's entries.
fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    env!("CARGO_PKG_VERSION").hash(&mut engine_hash);
    let digest = Sha256::new().chain_update(wasm).finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", engine_hash.finish())
}

/// Writes an entry whole or not at all (a temporary file, then a rename).
fn store_entry(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The largest sealed artifact the parent reads back: more than any real
/// component needs, less than the child may allocate.
fn artifact_cap(memory_bytes: u64) -> usize {
    usize::try_from(memory_bytes).unwrap_or(usize::MAX).min(1 << 30)
}

/// How much of the child's error output is kept for the reason.
const STDERR_CAP: usize = 8 << 10;

fn in_child(exe: &std::path::Path, memory_bytes: u64, timeout: Duration, wasm: &[u8]) -> Result<Trusted, LoadError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| LoadError::Compile(format!("no randomness for the compiler's key: {e}")))?;
    let key = Key::from_secret(&secret);
    let mut child = Command::new(exe)
        .arg("compile-module")
        .arg("--memory-bytes")
        .arg(memory_bytes.to_string())
        .env(COMPILE_KEY_ENV, key.to_hex())
        // glibc reserves address space per allocation arena (64 MiB each,
        // up to eight a core); they would count against the child's cap.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LoadError::Compile(format!("cannot start the compiler process {}: {e}", exe.display())))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        return Err(LoadError::Compile("the compiler process has no pipes".into()));
    };
    let input = wasm.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let cap = artifact_cap(memory_bytes);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.take(cap as u64 + 1).read_to_end(&mut out).map(|_| out)
    });
    let errors = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stderr.take(STDERR_CAP as u64).read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(LoadError::Compile(format!("lost the compiler process: {e}"))),
        }
    };
    let _ = writer.join();
    let output = reader.join().ok().and_then(Result::ok).unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(LoadError::Budget(format!(
            "compiling the component took longer than {timeout:?} (MODULE_COMPILE_TIMEOUT)"
        )));
    };
    if !status.success() {
        let out_of_memory = errors.contains("memory allocation") || errors.contains("out of memory");
        let reason = errors.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_owned();
        return Err(if out_of_memory {
            LoadError::Budget(format!(
                "compiling the component needed more than {memory_bytes} bytes of memory (MODULE_COMPILE_MEMORY): {reason}"
            ))
        } else if status.code() == Some(2) {
            LoadError::Compile(reason)
        } else {
            LoadError::Budget(format!("the compiler process failed ({status}): {reason}"))
        });
    }
    if output.len() > cap {
        return Err(LoadError::Budget(format!("the compiled component is over {cap} bytes")));
    }
    Trusted::open(&key, &output).map_err(|why| LoadError::Compile(format!("the compiler's output: {why}")))
}

/// `notification-host compile-module`: reads a component from standard
/// input, compiles it for this host's engine within `memory_bytes` of
/// address space, and writes it sealed under the key the parent gave.
/// Exit codes: 0 compiled, 2 not a valid component, 1 anything else.
pub fn compile_module_main(engine: &Engine, memory_bytes: u64) -> i32 {
    let Some(key) = std::env::var(COMPILE_KEY_ENV).ok().and_then(|k| Key::from_hex(&k)) else {
        eprintln!("compile-module is run by the host itself, with {COMPILE_KEY_ENV} set");
        return 1;
    };
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, memory_bytes, memory_bytes) {
        eprintln!("cannot cap the compiler's memory: {e}");
        return 1;
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return 1;
    }
    match Trusted::compile(engine, &wasm) {
        Ok(trusted) => match std::io::stdout().write_all(&seal(&key, trusted.bytes())) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the compiled component: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("not a valid WebAssembly component: {e:#}");
            2
        }
    }
}
