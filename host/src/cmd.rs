//! The host's commands, one file each: `serve` (the default), `migrate`,
//! `check`, `normalize`, `renormalize`, and for module authors `new` and
//! `capture`, and `modules` for the module store.

pub mod capture;
pub mod check;
pub mod modules;
pub mod new;
pub mod normalize;
pub mod renormalize;
pub mod serve;
