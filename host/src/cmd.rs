//! The host's one-shot commands (`serve` lives in [`crate::pipeline`]).

pub mod check;
pub mod normalize;
pub mod renormalize;
