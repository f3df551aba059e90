//! What a module's store holds: a WASI context that grants nothing, clocks
//! frozen at the epoch, its limits and its captured output, and the host
//! functions the contract offers.

use std::time::Duration;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
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

/// The per-store state: a WASI context that grants nothing (stdout and
/// stderr go to the capture), the store's limits.
pub(super) struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
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
        input: v1_1::notification::normalizer::types::KafkaRecord,
    ) -> v1_1::notification::normalizer::types::Fields {
        v1_1::builtin_fields(&input)
    }
}
