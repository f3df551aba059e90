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
use wasmtime::component::{Component as WasmComponent, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::record::{Fields, Record};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "normalizer",
    });
}

use bindings::notification::normalizer::types as wit_types;

/// The contract version this host implements (the WIT package version).
pub const CONTRACT_VERSION: &str = "1.0.0";

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every call into a module.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory a module instance may grow to, in bytes.
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
    /// The module answered with the contract's `error` variant: it looked at
    /// the record and refused it.
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
            CallError::Refused(_) => "refused",
            CallError::Timeout(_) => "timeout",
            CallError::Trap(_) => "trap",
            CallError::OutputTooLarge(..) => "output_too_large",
            CallError::Contract(_) => "contract",
        }
    }
}

/// The clocks a module sees: time stands still at the Unix epoch. The
/// contract gives a module everything it may depend on (the record carries
/// its own timestamp); a clock would only make answers differ between runs.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The per-store state: an empty WASI context and the store's limits.
struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The process-wide engine and linker that every module is loaded into.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    limits: Limits,
}

impl Runtime {
    /// Creates the engine, links WASI (with nothing granted) and starts the
    /// epoch ticker that enforces call deadlines.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(|e| anyhow!("{e}")).context("failed to create the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow!("{e}"))
            .context("failed to link WASI")?;
        spawn_epoch_ticker(&engine);
        Ok(Runtime { engine, linker: Arc::new(linker), limits })
    }

    /// The limits applied to calls.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a component from bytes and checks that it implements this
    /// host's contract. CPU-heavy: call it off the async runtime's workers.
    pub fn load(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let component = WasmComponent::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
        let pre = bindings::NormalizerPre::new(pre).map_err(|_| {
            LoadError::Contract(format!("it does not export notification:normalizer/normalize@{CONTRACT_VERSION}"))
        })?;
        let mut module = Component { pre, limits: self.limits, engine: self.engine.clone(), descriptor: None };
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
    /// The component does not export this host's contract version.
    #[error("incompatible contract: {0}")]
    Contract(String),
    /// The component's `describe` call failed.
    #[error("the component failed to describe itself: {0}")]
    Describe(String),
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
            Err(CallError::Refused(_)) => {}
            Err(_) => self.in_a_row = self.in_a_row.saturating_add(1),
        }
    }
}

/// A loaded, pre-instantiated normalizer component.
#[derive(Clone)]
pub struct Component {
    pre: bindings::NormalizerPre<StoreState>,
    limits: Limits,
    engine: Engine,
    descriptor: Option<Descriptor>,
}

/// One instance of a module in its own store, good until it traps.
struct Instance {
    store: Store<StoreState>,
    bindings: bindings::Normalizer,
}

impl Component {
    /// The name and version the component reported when it was loaded.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = self.limits.deadline.as_micros() / EPOCH_TICK.as_micros().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    fn instantiate(&self) -> Result<Instance, CallError> {
        let state = StoreState {
            wasi: WasiCtx::builder().wall_clock(FrozenClock).monotonic_clock(FrozenClock).build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self.pre.instantiate(&mut store).map_err(|e| self.classify(&e))?;
        Ok(Instance { store, bindings })
    }

    fn classify(&self, error: &wasmtime::Error) -> CallError {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.deadline),
            _ => CallError::Trap(format!("{error:#}")),
        }
    }

    fn describe(&self) -> Result<Descriptor, CallError> {
        let mut instance = self.instantiate()?;
        let d = instance
            .bindings
            .notification_normalizer_normalize()
            .call_describe(&mut instance.store)
            .map_err(|e| self.classify(&e))?;
        Ok(Descriptor { name: d.name, version: d.version })
    }

    /// Normalizes `records`, one answer per record, in order, until
    /// `breaker` trips: then it stops calling the module, and the answers
    /// end early (the records after the last answer get none).
    ///
    /// Records go to the module in `normalize-batch` calls of at most
    /// [`Limits::batch_size`]. When such a call fails as a whole (trap,
    /// deadline, or a malformed answer), its records are retried one call
    /// each, in fresh instances after each failure, so that one bad record
    /// costs only its own answer. The breaker sees every answer, so a module
    /// that fails on everything costs at most its limit in retries, not one
    /// deadline per record of the batch.
    pub fn normalize(&self, records: &[&Record], breaker: &mut Breaker) -> Vec<Result<Fields, CallError>> {
        let mut answers = Vec::with_capacity(records.len());
        let mut instance: Option<Instance> = None;
        for chunk in records.chunks(self.limits.batch_size.max(1)) {
            if breaker.tripped() {
                break;
            }
            match self.call_batch(&mut instance, chunk) {
                Ok(chunk_answers) => {
                    for answer in &chunk_answers {
                        breaker.observe(answer);
                    }
                    answers.extend(chunk_answers);
                }
                Err(_) => {
                    instance = None;
                    for record in chunk {
                        let answer = self.call_one(&mut instance, record);
                        if matches!(answer, Err(CallError::Trap(_) | CallError::Timeout(_))) {
                            instance = None;
                        }
                        breaker.observe(&answer);
                        answers.push(answer);
                        if breaker.tripped() {
                            break;
                        }
                    }
                }
            }
        }
        answers
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
        let inputs: Vec<wit_types::KafkaRecord> = chunk.iter().map(|r| to_wit(r)).collect();
        let results = instance
            .bindings
            .notification_normalizer_normalize()
            .call_normalize_batch(&mut instance.store, &inputs)
            .map_err(|e| self.classify(&e))?;
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
        let result = instance
            .bindings
            .notification_normalizer_normalize()
            .call_normalize(&mut instance.store, &to_wit(record))
            .map_err(|e| self.classify(&e))?;
        self.answer(result)
    }

    fn answer(&self, result: Result<wit_types::Fields, wit_types::Error>) -> Result<Fields, CallError> {
        match result {
            Ok(fields) => {
                let fields = from_wit(fields);
                let size = output_size(&fields);
                if size > self.limits.max_output_bytes {
                    return Err(CallError::OutputTooLarge(size, self.limits.max_output_bytes));
                }
                Ok(fields)
            }
            Err(error) => Err(CallError::Refused(match error {
                wit_types::Error::Unsupported(m) => format!("unsupported: {m}"),
                wit_types::Error::Invalid(m) => format!("invalid: {m}"),
                wit_types::Error::Internal(m) => format!("internal: {m}"),
            })),
        }
    }
}

fn output_size(f: &Fields) -> usize {
    [&f.customer_id, &f.runner_id, &f.order_id, &f.event_type, &f.correlation_id, &f.source_service, &f.status]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum()
}

fn to_wit(record: &Record) -> wit_types::KafkaRecord {
    wit_types::KafkaRecord {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.clone(),
        headers: record
            .headers
            .iter()
            .map(|h| wit_types::Header { key: h.key.clone(), value: h.value.clone() })
            .collect(),
        value: record.value.clone(),
    }
}

fn from_wit(f: wit_types::Fields) -> Fields {
    Fields {
        customer_id: f.customer_id,
        runner_id: f.runner_id,
        order_id: f.order_id,
        event_type: f.event_type,
        correlation_id: f.correlation_id,
        source_service: f.source_service,
        status: f.status,
    }
}
