//! Wire protocol between desktop and server: framing, messages, authenticated encryption.
#![warn(missing_docs)]
