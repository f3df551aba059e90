//! The host's commands, one file each: `serve` (the default), `migrate`,
//! `check`, `normalize`, `renormalize`, and for module authors `new` and
//! `capture`, and `modules` for the module store; `import-legacy` and
//! `compare-legacy` for the cut-over from the original service.

pub mod capture;
pub mod check;
pub mod compare_legacy;
pub mod import_legacy;
pub mod modules;
pub mod new;
pub mod normalize;
pub mod renormalize;
pub mod serve;
