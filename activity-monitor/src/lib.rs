//! Desktop side: decides when the user is idle, warns, asks for
//! consolidation, and asks for reintegration when the user is back; and the
//! back-ends that put the desktop to sleep (S3) and measure how long it slept.
//!
//! # Why it is built this way
//!
//! - **Idle sources are polled, not event-driven.** Every source answers one
//!   question, "how long since the last keyboard or pointer input?"
//!   ([`IdleSource::idle_for`]). The X server and logind already keep that
//!   number, so asking is one round trip; the evdev source drains whatever
//!   its devices queued since the last poll (non-blocking reads), so it needs
//!   no thread either. A poll every quarter second is far finer than the
//!   15 s threshold, and one shape for all three keeps the monitor simple.
//! - **The decision is a pure state machine** ([`IdleMachine`]): it is fed
//!   the time and the source's idle time and says what to do (warn, cancel,
//!   consolidate, reintegrate). No clock and no I/O inside, so its tests feed
//!   it times instead of sleeping.
//! - **The actions are pluggable** ([`Actions`]): consolidation and
//!   reintegration are other crates' jobs; the command line runs commands
//!   the administrator gives ([`CommandActions`]).
//! - **Input is what cancels the warning.** The desktop notification has a
//!   "Cancel" button, but clicking it is pointer input, and any input during
//!   the warning cancels it: the notification needs no reply channel.
//! - **The sleep back-end measures sleep with the kernel's clocks.**
//!   `CLOCK_BOOTTIME` counts time suspended and `CLOCK_MONOTONIC` does not,
//!   so their difference grows by exactly the time slept, whichever way the
//!   machine was suspended and however long the request takes to return.
//!
//! # Sources
//!
//! | source | what it reads | client |
//! |---|---|---|
//! | [`X11Source`] | the MIT-SCREEN-SAVER extension's `ms_since_user_input` | `x11rb` (pure Rust, speaks to `$DISPLAY`) |
//! | [`LogindSource`] | the session's `IdleHint`/`IdleSinceHint` | `loginctl show-session` (a real client of the real service; a D-Bus crate would be the heaviest dependency of the crate for two properties) |
//! | [`EvdevSource`] | `struct input_event` records from `/dev/input/event*` devices with keys or pointer axes | `read(2)` and two ioctls via nix (the 24-byte record is parsed here; an evdev crate would add more than it saves) |
//!
//! [`open_source`] picks one: X11 if `$DISPLAY` answers, else logind if it
//! answers, else evdev if there are input devices; else an error naming what
//! was tried and why each failed.
//!
//! logind's idle hint is only as fine as whoever sets it (the desktop
//! environment's own idle delay, or the tty's access time), so with logind
//! the monitor can only be as quick as that.
#![warn(missing_docs)]

mod actions;
mod clock;
mod evdev;
mod idle;
mod logind;
mod machine;
mod monitor;
mod notify;
mod select;
mod sleep;
mod sysfs;
mod warning;
mod x11;
mod xauth;

pub use actions::{ActionError, Actions, CommandActions};
pub use clock::SuspendClock;
pub use evdev::{EvdevSource, DEFAULT_INPUT_DIR};
pub use idle::{IdleError, IdleSource};
pub use logind::LogindSource;
pub use machine::{IdleMachine, MachineConfig, MonitorState, Step};
pub use monitor::{Monitor, MonitorError};
pub use notify::Notifier;
pub use select::{open_source, IdleSourceKind, SourceOptions, UnknownSource};
pub use sleep::{LogindSuspend, SleepBackend, SleepError, Slept, SystemSuspend};
pub use sysfs::{SysfsSuspend, SYS_POWER_STATE};
pub use warning::{warning_lines, X11Warning, WARNING_CLASS, WARNING_TITLE};
pub use x11::X11Source;
pub use xauth::connect_x11;
