//! Benchmarks that print their figures beside their baselines.
#![warn(missing_docs)]
