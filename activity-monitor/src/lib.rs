//! Desktop side: user idleness detection (later issue).
#![warn(missing_docs)]
