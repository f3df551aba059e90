//! The host's commands, one file each: `serve` (the default), `migrate`,
//! `check`, `normalize` and `renormalize`.

pub mod check;
pub mod normalize;
pub mod renormalize;
pub mod serve;
