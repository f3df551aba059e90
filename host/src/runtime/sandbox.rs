//! What a module's store holds: a WASI context that grants nothing, clocks
//! frozen at the epoch whose timers are always due, a memory budget over
//! all its memories and tables, its captured output, and the host functions
//! the contract offers.

use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v1_1;
use super::capture::Captured;

/// The clocks a module sees: time stands still at the Unix epoch. The
/// contract gives a module everything it may depend on (the record carries
/// its own timestamp); a clock would only make answers differ between runs.
pub(super) struct FrozenClock;

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

/// `wasi:clocks/monotonic-clock` as a module sees it: `now` is the epoch,
/// and every timer it subscribes to is due at once. A module's call must
/// end at its deadline whatever it does, and the deadline (an epoch
/// interrupt) only fires while WebAssembly runs: a sleep that blocked in the
/// host (`std::thread::sleep`, Python's `time.sleep`, a poll on a clock
/// subscription) would hold the normalize stage, and every topic, for as
/// long as it asked. With time standing still, a sleep returns at once and
/// a module that waits for time to pass spins in its own code until its
/// deadline stops it. Nothing else a module can reach blocks: it has no
/// files, no network, an empty stdin and a stdout that takes everything.
pub(super) struct FrozenTimers;

impl HasData for FrozenTimers {
    type Data<'a> = Timers<'a>;
}

/// The table a module's timers live in.
pub(super) struct Timers<'a>(pub &'a mut ResourceTable);

/// A timer that is always due.
struct Due;

#[wasmtime_wasi::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

impl Timers<'_> {
    fn due(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let due = self.0.push(Due)?;
        subscribe(self.0, due)
    }
}

impl monotonic_clock::Host for Timers<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
    }

    fn subscribe_duration(&mut self, _for: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
    }
}

/// The bytes each table element is counted as (a pointer, as wasmtime
/// stores them, and a pointer's worth of bookkeeping).
const TABLE_ELEMENT_BYTES: usize = 2 * std::mem::size_of::<usize>();

/// The most instances, memories and tables one module instance may create
/// (a component holds several core instances; a normal one, a handful).
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// A store's memory budget: every linear memory and table the module's
/// instances create or grow counts against one total, so a module cannot
/// take its limit once per memory.
#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    fn take(&mut self, more: usize, what: &str) -> wasmtime::Result<bool> {
        let used = self.used.saturating_add(more);
        if used > self.limit {
            // An error, not a refusal: the module traps, and the trap names
            // the cause.
            wasmtime::bail!(
                "the module asked for {used} bytes of {what} and tables in all, over its {}-byte memory limit",
                self.limit
            );
        }
        self.used = used;
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for Budget {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.take(desired.saturating_sub(current), "memory")
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.take(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES), "memory")
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// The per-store state: a WASI context that grants nothing (stdout and
/// stderr go to the capture), the store's memory budget.
pub(super) struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub budget: Budget,
    pub output: Captured,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl v1_1::notification::normalizer::types::Host for StoreState {}

impl v1_1::notification::normalizer::host::Host for StoreState {
    fn builtin_fields(
        &mut self,
        input: v1_1::notification::normalizer::types::KafkaRecordResult,
    ) -> v1_1::notification::normalizer::types::Fields {
        v1_1::builtin_fields(&input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn the_budget_counts_every_memory_and_table_together() {
        let mut b = Budget::new(10 << 20);
        assert!(b.memory_growing(0, 4 << 20, None).unwrap());
        assert!(b.memory_growing(0, 4 << 20, None).unwrap(), "a second memory takes from the same budget");
        assert!(b.memory_growing(4 << 20, 7 << 20, None).is_err(), "the total would pass 10 MiB");
        assert!(!b.memory_growing(0, 1 << 20, Some(1 << 10)).unwrap(), "past a memory's own maximum is a refusal");
        assert!(b.table_growing(0, 1 << 20, None).is_err(), "table elements count as bytes");
    }
}
