//! Server side: wakes a sleeping desktop before state is fetched from it.
#![warn(missing_docs)]
