//! Sagas as the log sees them: the learned model (steps, transitions and
//! their latencies, what is unusual about a saga). Pure domain types, below
//! `storage`; the learner job that feeds them from the database is
//! [`crate::learner`].

pub mod latencies;
pub mod learn;
pub mod producers;

pub use latencies::Latencies;
pub use learn::{Flag, FlagKind, LearnRow, Limits, Model, Saga, Step, Taught};
pub use producers::{Horizons, Producer, Rates};
