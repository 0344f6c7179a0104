//! Starting QEMU and driving it over QMP.
//!
//! Shared by both sides of Jettison: the desktop and the server each run the
//! user's VM in QEMU with the same profile ([`VmSpec`]), whose guest RAM is a
//! shared file. Moving the VM means saving its device state, the
//! "descriptor", without that RAM ([`save_device_state`]) and loading it
//! into a QEMU started with `-incoming defer` over the same RAM contents
//! ([`load_device_state`]). [`Qmp`] is the monitor connection both use,
//! [`SerialLog`] reads what the guest prints, and [`GuestImage`] is the
//! small test guest that `scripts/guest-image` builds.
#![warn(missing_docs)]

mod agent;
mod devices;
mod disk_view;
mod error;
mod guest;
mod host;
mod line;
mod migration;
mod no_hugepage;
mod poll;
mod process;
mod qmp;
mod serial;
mod user;
mod vm;
mod vm_load;

pub use agent::{settle_guest_in_background, GuestAgent, Resumed};
pub use devices::{announce, disk_virtual_sizes, nic_args, screendump, DiskBackend, Tap};
pub use disk_view::{virtual_size, DiskFormat, DiskView, ViewAccess};
pub use error::QemuError;
pub use guest::GuestImage;
pub use host::{cpu_models, kvm_usable, AccelChoice};
pub use migration::{load_device_state, resume, save_device_state};
pub use process::{alive as process_alive, clear_signal_mask, QemuProcess};
pub use qmp::Qmp;
pub use serial::SerialLog;
pub use user::QemuUser;
pub use vm::{default_ovmf_code, default_ovmf_vars, Accel, Boot, Display, VmSpec};
pub use vm_load::{
    clock_ticks_per_sec, dirty_rate, judge, process_cpu_time, DirtyRate, IdleThresholds, IdleVerdict, Measured,
    VmLoadSample, VmLoadWindow,
};
