//! Benchmarks that print their figures beside the baselines they are
//! compared to, measured in the same run. Each benchmark is a binary under
//! `src/bin/`; `bench/RESULTS.md` records results and the commands that
//! produced them. The library holds what the binaries share.
#![warn(missing_docs)]

pub mod capped_link;
pub mod fleet;
pub mod link;
pub mod measure;
pub mod nbd;
pub mod power_replay;
pub mod precopy;
pub mod proc_figures;
pub mod recorded;
pub mod trace_shape;
