//! Copy-on-write store of two sparse slices (fetched, dirty) with persistent bitmaps.
#![warn(missing_docs)]
