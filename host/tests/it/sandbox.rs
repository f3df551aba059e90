//! A module can take nothing from the host beyond its limits, whatever it
//! does: a call ends at its deadline even when the module sleeps or waits
//! for a clock, memory is capped for the whole instance, compiling is capped
//! in time and memory, and the compilation cache loads only entries whose
//! seal verifies.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use notification_host::record::Record;
use notification_host::runtime::{Breaker, Cache, CacheKey, CallError, Compiler, Limits, LoadError, Runtime};

use crate::support;

const DEADLINE: Duration = Duration::from_millis(50);

fn limits() -> Limits {
    Limits { deadline: DEADLINE, ..Limits::default() }
}

fn sleepy() -> Vec<u8> {
    std::fs::read(support::component("fixture_sleepy")).unwrap()
}

/// The host's own executable, which compiles modules in a child process.
fn host_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_notification-host"))
}

fn child(memory_bytes: u64, timeout: Duration) -> Compiler {
    Compiler::Child { exe: host_exe(), memory_bytes, timeout }
}

/// The fixture's `describe` sleeps 30 s and its records sleep, or spin until
/// the monotonic or the wall clock has moved 30 s. Time stands still for a
/// module and its timers are due at once, so the load and every call end
/// within their deadlines; before, the sleeps blocked in the host, where no
/// deadline reaches.
#[test]
fn a_module_that_waits_for_time_ends_at_its_deadline() {
    let runtime = Runtime::new(limits()).unwrap();
    let started = Instant::now();
    let module = runtime.load(&sleepy()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "describe() held the load for {:?}", started.elapsed());

    let records: Vec<Record> = ["sleep", "clock", "wall", "other"]
        .iter()
        .enumerate()
        .map(|(i, v)| support::record("sleepy_a", i as i64, v))
        .collect();
    let refs: Vec<&Record> = records.iter().collect();
    let started = Instant::now();
    let run = module.normalize(&refs, &mut Breaker::unlimited());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "four records took {took:?}");
    let answers: Vec<_> = run.answers.iter().map(|a| a.clone().map(|f| f.order_id)).collect();
    assert_eq!(answers[0], Ok(Some("ok".into())), "a sleep returns at once: time stands still");
    assert_eq!(answers[1], Err(CallError::Timeout(DEADLINE)), "waiting for the monotonic clock spins to the deadline");
    assert_eq!(answers[2], Err(CallError::Timeout(DEADLINE)), "waiting for the wall clock spins to the deadline");
    assert_eq!(answers[3], Ok(Some("ok".into())));
}

/// A component of several core modules, each with a 40 MiB memory (240 MiB
/// in all, none over 64 MiB): the memory limit counts every memory and
/// table of an instance together, so it is refused, where a limit per
/// memory would let it take 240 MiB.
#[test]
fn the_memory_limit_holds_for_all_of_an_instance_s_memories_together() {
    let wat =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/many-memories.wat")).unwrap();
    let wasm = wat::parse_str(&wat).unwrap();
    let limited = Runtime::new(Limits { memory_bytes: 64 << 20, ..limits() }).unwrap();
    match limited.load(&wasm) {
        Err(LoadError::Describe(reason)) => assert!(reason.contains("67108864-byte memory limit"), "{reason}"),
        other => panic!("expected the instance to be refused, got {:?}", other.map(|_| ())),
    }
    // With room for all of them it loads and answers.
    let roomy = Runtime::new(Limits { memory_bytes: 256 << 20, ..limits() }).unwrap();
    let module = roomy.load(&wasm).unwrap();
    assert_eq!(module.descriptor().map(|d| d.name.as_str()), Some("many-memories"));
}

#[test]
fn modules_compile_in_a_child_within_a_memory_and_time_budget() {
    let wasm = std::fs::read(support::component("normalizer_campus_delivery")).unwrap();
    let roomy = Runtime::with(limits(), child(2 << 30, Duration::from_secs(120)), None).unwrap();
    let module = roomy.load(&wasm).unwrap();
    assert_eq!(module.descriptor().map(|d| d.name.as_str()), Some("campus-delivery"));

    let cramped = Runtime::with(limits(), child(48 << 20, Duration::from_secs(120)), None).unwrap();
    match cramped.load(&wasm) {
        Err(LoadError::Budget(reason)) => assert!(reason.contains("MODULE_COMPILE_MEMORY"), "{reason}"),
        other => panic!("expected a memory budget refusal, got {:?}", other.map(|_| ())),
    }
    let hurried = Runtime::with(limits(), child(2 << 30, Duration::from_millis(1)), None).unwrap();
    match hurried.load(&wasm) {
        Err(LoadError::Budget(reason)) => assert!(reason.contains("MODULE_COMPILE_TIMEOUT"), "{reason}"),
        other => panic!("expected a time budget refusal, got {:?}", other.map(|_| ())),
    }
    match roomy.load(b"\0asm not a component") {
        Err(LoadError::Compile(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected a compile error, got {:?}", other.map(|_| ())),
    }
}

/// A cache entry is loaded only when its seal verifies under the key it was
/// written with. A compiler that cannot run shows which loads came from the
/// cache: they succeed; a refused entry falls through to it and fails.
#[test]
fn the_cache_loads_only_entries_whose_seal_verifies() {
    let wasm = std::fs::read(support::component("normalizer_default")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = |key: &str| Some(Cache { dir: dir.path().to_path_buf(), key: CacheKey::from_secret(key.as_bytes()) });
    let nowhere =
        Compiler::Child { exe: "/nonexistent/compiler".into(), memory_bytes: 1 << 30, timeout: Duration::from_secs(5) };

    Runtime::with(limits(), child(2 << 30, Duration::from_secs(120)), cache("a")).unwrap().load(&wasm).unwrap();
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");

    let same_key = Runtime::with(limits(), nowhere.clone(), cache("a")).unwrap();
    assert!(same_key.load(&wasm).is_ok(), "an entry sealed with this key is loaded");
    let other_key = Runtime::with(limits(), nowhere.clone(), cache("b")).unwrap();
    assert!(other_key.load(&wasm).is_err(), "an entry sealed with another key is never loaded");

    // One byte of the compiled code changed on disk.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&entries[0], &bytes).unwrap();
    assert!(same_key.load(&wasm).is_err(), "a corrupted entry is never loaded");
    // With a compiler at hand the entry is compiled again and replaced.
    Runtime::with(limits(), child(2 << 30, Duration::from_secs(120)), cache("a")).unwrap().load(&wasm).unwrap();
    assert!(same_key.load(&wasm).is_ok(), "the replaced entry verifies");
}
