//! The jettison command line.
fn main() {}
