//! The WebAssembly side of the host: one wasmtime [`Engine`] and [`Linker`]
//! per process, one pre-instantiated component per module, and a short-lived
//! [`Store`] per batch of records.
//!
//! Nothing outside this module sees a wasmtime or bindgen type: callers hand
//! in [`Record`]s and get [`Fields`] or a [`CallError`] back.
//!
//! A module runs sandboxed: its WASI context is empty (no preopened
//! directories, environment, arguments, network or stdio) and its clocks are
//! frozen at the epoch, each store has a memory cap, and each call an epoch
//! deadline. A trap poisons an instance,
//! so a batch that traps is retried record by record in fresh instances to
//! find the one record at fault; the others keep their answers.
#![deny(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::WasiCtx;

use crate::record::{Fields, Record};

mod bindings;
mod capture;
pub mod compile;
mod sandbox;

use bindings::{v1_0, v1_1};
use capture::Captured;
pub use compile::{Cache, Compiler};
pub use notification_artifact::Key as CacheKey;
use sandbox::{Budget, FrozenClock, FrozenTimers, StoreState, Timers};

/// The contract versions this host runs, newest first.
pub const CONTRACT_VERSIONS: [&str; 2] = ["1.1.0", "1.0.0"];

/// The newest contract version (the WIT package version `new` projects use).
pub const CONTRACT_VERSION: &str = CONTRACT_VERSIONS[0];

/// The newest contract's WIT text, for projects created outside a checkout.
pub const CONTRACT_WIT: &str = include_str!("../../wit/normalizer.wit");

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every call into a module.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory a module instance may use, in bytes: all its linear memories
    /// and tables together.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take before it is interrupted (counted
    /// by the epoch ticker, so waiting for a CPU counts too).
    pub deadline: Duration,
    /// Total size of the strings one record's answer may carry, in bytes.
    pub max_output_bytes: usize,
    /// Records passed to one `normalize-batch` call.
    pub batch_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            deadline: Duration::from_millis(50),
            max_output_bytes: 64 << 10,
            batch_size: 64,
        }
    }
}

/// Why a module gave no fields for a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The module answered `unsupported`: the record is not in a shape it
    /// knows, so the next matching module (or the built-in default) gets it.
    #[error("module does not support the record: {0}")]
    Unsupported(String),
    /// The module answered `invalid` or `internal`: it looked at the record
    /// and refused it.
    #[error("module refused the record: {0}")]
    Refused(String),
    /// The module ran past its (wall-clock) deadline.
    #[error("module exceeded its {0:?} deadline")]
    Timeout(Duration),
    /// The module trapped (a panic, an out-of-bounds access, or memory growth
    /// beyond its cap).
    #[error("module trapped: {0}")]
    Trap(String),
    /// The module's answer was larger than allowed.
    #[error("module answer of {0} bytes exceeds the {1}-byte cap")]
    OutputTooLarge(usize, usize),
    /// The module's answer did not match the records it was given.
    #[error("module broke the contract: {0}")]
    Contract(String),
}

impl CallError {
    /// A short name of the cause, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Unsupported(_) => "unsupported",
            CallError::Refused(_) => "refused",
            CallError::Timeout(_) => "timeout",
            CallError::Trap(_) => "trap",
            CallError::OutputTooLarge(..) => "output_too_large",
            CallError::Contract(_) => "contract",
        }
    }
}

/// The process-wide engine and linker that every module is loaded into.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    limits: Limits,
    /// Where components are compiled: in-process, or in a child within a
    /// budget.
    compiler: Compiler,
    /// Where compiled components are kept, if anywhere.
    cache: Option<Cache>,
}

/// The engine's settings; the compiler process builds its engine from the
/// same, so that what it compiles loads here.
fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

fn new_engine() -> anyhow::Result<Engine> {
    Engine::new(&engine_config()).map_err(|e| anyhow!("{e}")).context("failed to create the wasmtime engine")
}

impl Runtime {
    /// Creates the engine, links WASI (with nothing granted, its timers
    /// always due) and the contract's host functions, and starts the epoch
    /// ticker that enforces call deadlines. Components compile in this
    /// process, uncached: for tools and tests; `serve` and the commands use
    /// [`Runtime::with`].
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        Runtime::with(limits, Compiler::InProcess, None)
    }

    /// [`Runtime::new`] with the compiler and the cache given.
    pub fn with(limits: Limits, compiler: Compiler, cache: Option<Cache>) -> anyhow::Result<Self> {
        let engine = new_engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow!("{e}"))
            .context("failed to link WASI")?;
        // The clock's timers replace WASI's (which sleep for real).
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<StoreState, FrozenTimers>(
            &mut linker,
            |s| Timers(&mut s.table),
        )
        .map_err(|e| anyhow!("{e}"))
        .context("failed to link the frozen clock")?;
        linker.allow_shadowing(false);
        v1_1::Normalizer::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("{e}"))
            .context("failed to link the contract's host functions")?;
        spawn_epoch_ticker(&engine);
        Ok(Runtime { engine, linker: Arc::new(linker), limits, compiler, cache })
    }

    /// The limits applied to calls.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a component from bytes and checks that it implements a
    /// contract version this host runs, with the runtime's limits.
    /// CPU-heavy: call it off the async runtime's workers.
    pub fn load(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        self.load_with(bytes, self.limits)
    }

    /// [`Runtime::load`] with a module's own limits.
    pub fn load_with(&self, bytes: &[u8], limits: Limits) -> Result<Component, LoadError> {
        let component = compile::compiled(&self.engine, &self.compiler, self.cache.as_ref(), bytes)?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let pre = if exports.iter().any(|e| e == "notification:normalizer/normalize@1.1.0") {
            let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
            Pre::V1_1(v1_1::NormalizerPre::new(pre).map_err(|e| LoadError::Contract(format!("{e:#}")))?)
        } else if exports.iter().any(|e| e == "notification:normalizer/normalize@1.0.0") {
            let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
            Pre::V1_0(v1_0::NormalizerPre::new(pre).map_err(|e| LoadError::Contract(format!("{e:#}")))?)
        } else {
            let supported: Vec<String> =
                CONTRACT_VERSIONS.iter().map(|v| format!("notification:normalizer/normalize@{v}")).collect();
            return Err(LoadError::Contract(format!(
                "the component exports [{}]; this host runs {}",
                exports.join(", "),
                supported.join(" or ")
            )));
        };
        let mut module = Component { pre, limits, engine: self.engine.clone(), descriptor: None };
        let descriptor = module.describe().map_err(|e| LoadError::Describe(e.to_string()))?;
        module.descriptor = Some(descriptor);
        Ok(module)
    }

    /// Reads and loads a component file.
    pub fn load_file(&self, path: &Path) -> anyhow::Result<Component> {
        let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        self.load(&bytes).with_context(|| format!("failed to load {}", path.display()))
    }
}

/// Why a component could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component imports something the sandbox does not provide.
    #[error("the component needs imports the host does not grant: {0}")]
    Imports(String),
    /// The component does not export a contract version this host runs.
    #[error("incompatible contract: {0}")]
    Contract(String),
    /// The component's `describe` call failed.
    #[error("the component failed to describe itself: {0}")]
    Describe(String),
    /// Compiling the component went over its memory or time budget.
    #[error("the component is refused: {0}")]
    Budget(String),
}

/// `notification-host compile-module`: compiles a component read from
/// standard input within `memory_bytes` for the host that spawned it (see
/// [`compile`]). Returns the exit code.
pub fn compile_module(memory_bytes: u64) -> i32 {
    match new_engine() {
        Ok(engine) => compile::compile_module_main(&engine, memory_bytes),
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the engine
/// lives; the thread holds only a weak handle and ends with the engine.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "Failed to start the epoch ticker; module deadlines are not enforced.");
    }
}

/// A module's name and version, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The module's name.
    pub name: String,
    /// The module's version.
    pub version: String,
}

/// Counts a module's failures in a row and trips at a limit. Traps,
/// deadlines, oversized and malformed answers are failures; a success resets
/// the count; a refusal (the contract's `error` variant) is the module doing
/// its job and leaves the count alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    in_a_row: u64,
    limit: u64,
}

impl Breaker {
    /// A breaker that has already counted `in_a_row` failures and trips at `limit`.
    pub fn new(in_a_row: u64, limit: u64) -> Breaker {
        Breaker { in_a_row, limit }
    }

    /// A breaker that never trips.
    pub fn unlimited() -> Breaker {
        Breaker::new(0, u64::MAX)
    }

    /// Failures in a row so far.
    pub fn in_a_row(&self) -> u64 {
        self.in_a_row
    }

    /// Whether the limit has been reached.
    pub fn tripped(&self) -> bool {
        self.in_a_row >= self.limit
    }

    fn observe(&mut self, answer: &Result<Fields, CallError>) {
        match answer {
            Ok(_) => self.in_a_row = 0,
            Err(CallError::Refused(_) | CallError::Unsupported(_)) => {}
            Err(_) => self.in_a_row = self.in_a_row.saturating_add(1),
        }
    }
}

/// What one call into a module printed: the records the call covered
/// (`first..first + len` of the records given to [`Component::normalize`])
/// and the text, capped at [`OUTPUT_CAP`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Index of the call's first record.
    pub first: usize,
    /// How many records the call covered (1 for a single-record call).
    pub len: usize,
    /// What the module wrote to stdout and stderr.
    pub text: String,
}

/// What one call into a module may print before the rest is dropped.
pub const OUTPUT_CAP: usize = 4 << 10;

/// The answers of a run over records, and what the module printed.
#[derive(Debug, Default)]
pub struct Run {
    /// One per record, in order, ending early if the breaker tripped.
    pub answers: Vec<Result<Fields, CallError>>,
    /// Output of the calls that printed anything.
    pub output: Vec<Output>,
}

/// A pre-instantiated component of one contract version.
#[derive(Clone)]
enum Pre {
    V1_1(v1_1::NormalizerPre<StoreState>),
    V1_0(v1_0::NormalizerPre<StoreState>),
}

/// An instance's exports, by contract version.
enum Exports {
    V1_1(v1_1::Normalizer),
    V1_0(v1_0::Normalizer),
}

/// A loaded, pre-instantiated normalizer component.
#[derive(Clone)]
pub struct Component {
    pre: Pre,
    limits: Limits,
    engine: Engine,
    descriptor: Option<Descriptor>,
}

/// One instance of a module in its own store, good until it traps.
struct Instance {
    store: Store<StoreState>,
    exports: Exports,
}

impl Component {
    /// The name and version the component reported when it was loaded.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }

    /// The contract version the component implements.
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::V1_1(_) => "1.1.0",
            Pre::V1_0(_) => "1.0.0",
        }
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = self.limits.deadline.as_micros() / EPOCH_TICK.as_micros().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    fn instantiate(&self) -> Result<Instance, CallError> {
        let output = Captured::new(OUTPUT_CAP);
        let state = StoreState {
            wasi: WasiCtx::builder()
                .wall_clock(FrozenClock)
                .monotonic_clock(FrozenClock)
                .stdout(output.clone())
                .stderr(output.clone())
                .build(),
            table: ResourceTable::new(),
            budget: Budget::new(self.limits.memory_bytes),
            output,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.budget);
        store.set_epoch_deadline(self.deadline_ticks());
        let exports = match &self.pre {
            Pre::V1_1(pre) => Exports::V1_1(pre.instantiate(&mut store).map_err(|e| self.classify(&e))?),
            Pre::V1_0(pre) => Exports::V1_0(pre.instantiate(&mut store).map_err(|e| self.classify(&e))?),
        };
        Ok(Instance { store, exports })
    }

    fn classify(&self, error: &wasmtime::Error) -> CallError {
        // The trap itself, without wasmtime's backtrace of unnamed functions:
        // what the module printed (a panic message, a traceback) says more.
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.deadline),
            Some(trap) => CallError::Trap(format!("wasm trap: {trap}")),
            None => CallError::Trap(error.root_cause().to_string()),
        }
    }

    fn describe(&self) -> Result<Descriptor, CallError> {
        let mut instance = self.instantiate()?;
        let store = &mut instance.store;
        let (name, version) = match &instance.exports {
            Exports::V1_1(e) => {
                let d = e.notification_normalizer_normalize().call_describe(store).map_err(|e| self.classify(&e))?;
                (d.name, d.version)
            }
            Exports::V1_0(e) => {
                let d = e.notification_normalizer_normalize().call_describe(store).map_err(|e| self.classify(&e))?;
                (d.name, d.version)
            }
        };
        Ok(Descriptor { name, version })
    }

    /// Normalizes `records`, one answer per record, in order, until
    /// `breaker` trips: then it stops calling the module, and the answers
    /// end early (the records after the last answer get none).
    ///
    /// Records go to the module in `normalize-batch` calls of at most
    /// [`Limits::batch_size`]. When such a call fails as a whole (trap,
    /// deadline, or a malformed answer), its records are retried one call
    /// each, in fresh instances after each failure, so that one bad record
    /// costs only its own answer (and what it printed is its own). The
    /// breaker sees every answer, so a module that fails on everything costs
    /// at most its limit in retries, not one deadline per record of the batch.
    pub fn normalize(&self, records: &[&Record], breaker: &mut Breaker) -> Run {
        let mut run = Run { answers: Vec::with_capacity(records.len()), output: Vec::new() };
        let mut instance: Option<Instance> = None;
        for chunk in records.chunks(self.limits.batch_size.max(1)) {
            if breaker.tripped() {
                break;
            }
            let first = run.answers.len();
            let batch = self.call_batch(&mut instance, chunk);
            // A failed batch's output is dropped: the retries below print
            // it again, each for its own record.
            let printed = take_output(&mut instance);
            match batch {
                Ok(chunk_answers) => {
                    if let Some(text) = printed {
                        run.output.push(Output { first, len: chunk.len(), text });
                    }
                    for answer in &chunk_answers {
                        breaker.observe(answer);
                    }
                    run.answers.extend(chunk_answers);
                }
                Err(_) => {
                    instance = None;
                    for record in chunk {
                        let at = run.answers.len();
                        let answer = self.call_one(&mut instance, record);
                        if let Some(text) = take_output(&mut instance) {
                            run.output.push(Output { first: at, len: 1, text });
                        }
                        if matches!(answer, Err(CallError::Trap(_) | CallError::Timeout(_))) {
                            instance = None;
                        }
                        breaker.observe(&answer);
                        run.answers.push(answer);
                        if breaker.tripped() {
                            break;
                        }
                    }
                }
            }
        }
        run
    }

    fn ready<'a>(&self, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, CallError> {
        if slot.is_none() {
            *slot = Some(self.instantiate()?);
        }
        slot.as_mut().ok_or_else(|| CallError::Contract("no instance".into()))
    }

    fn call_batch(
        &self,
        slot: &mut Option<Instance>,
        chunk: &[&Record],
    ) -> Result<Vec<Result<Fields, CallError>>, CallError> {
        let instance = self.ready(slot)?;
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let store = &mut instance.store;
        let results: Vec<Result<Fields, CallError>> = match &instance.exports {
            Exports::V1_1(e) => {
                let headers: Vec<_> = chunk.iter().map(|r| v1_1::headers_of(r)).collect();
                let inputs: Vec<_> = chunk.iter().zip(&headers).map(|(r, h)| v1_1::to_wit(r, h)).collect();
                let results = e
                    .notification_normalizer_normalize()
                    .call_normalize_batch(store, &inputs)
                    .map_err(|e| self.classify(&e))?;
                results.into_iter().map(v1_1::answer).collect()
            }
            Exports::V1_0(e) => {
                let headers: Vec<_> = chunk.iter().map(|r| v1_0::headers_of(r)).collect();
                let inputs: Vec<_> = chunk.iter().zip(&headers).map(|(r, h)| v1_0::to_wit(r, h)).collect();
                let results = e
                    .notification_normalizer_normalize()
                    .call_normalize_batch(store, &inputs)
                    .map_err(|e| self.classify(&e))?;
                results.into_iter().map(v1_0::answer).collect()
            }
        };
        if results.len() != chunk.len() {
            return Err(CallError::Contract(format!(
                "normalize-batch answered {} results for {} records",
                results.len(),
                chunk.len()
            )));
        }
        Ok(results.into_iter().map(|r| self.answer(r)).collect())
    }

    fn call_one(&self, slot: &mut Option<Instance>, record: &Record) -> Result<Fields, CallError> {
        let instance = self.ready(slot)?;
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let store = &mut instance.store;
        let result = match &instance.exports {
            Exports::V1_1(e) => v1_1::answer(
                e.notification_normalizer_normalize()
                    .call_normalize(store, v1_1::to_wit(record, &v1_1::headers_of(record)))
                    .map_err(|e| self.classify(&e))?,
            ),
            Exports::V1_0(e) => v1_0::answer(
                e.notification_normalizer_normalize()
                    .call_normalize(store, v1_0::to_wit(record, &v1_0::headers_of(record)))
                    .map_err(|e| self.classify(&e))?,
            ),
        };
        self.answer(result)
    }

    fn answer(&self, result: Result<Fields, CallError>) -> Result<Fields, CallError> {
        let fields = result?;
        let size = output_size(&fields);
        if size > self.limits.max_output_bytes {
            return Err(CallError::OutputTooLarge(size, self.limits.max_output_bytes));
        }
        Ok(fields)
    }
}

/// What the instance in `slot` printed since the last take.
fn take_output(slot: &mut Option<Instance>) -> Option<String> {
    slot.as_ref().and_then(|i| i.store.data().output.take())
}

fn output_size(f: &Fields) -> usize {
    [&f.customer_id, &f.runner_id, &f.order_id, &f.event_type, &f.correlation_id, &f.source_service, &f.status]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum()
}
