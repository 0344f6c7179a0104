//! Desktop side: decides when the user is idle (input devices, the X11
//! screensaver, logind), warns, and asks for consolidation; input while the
//! VM is away asks for reintegration.
//!
//! Not written yet: it arrives with the power issue. The crate exists so
//! that the workspace has its final shape.
#![warn(missing_docs)]
