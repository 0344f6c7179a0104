//! Cross-crate end-to-end tests.
#![warn(missing_docs)]
