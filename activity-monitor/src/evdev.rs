//! Last-input time from the kernel's input devices (`/dev/input/event*`).
//!
//! Every device that reports keys (`EV_KEY`) or pointer motion (`EV_REL`,
//! `EV_ABS`) is opened non-blocking, and each poll drains whatever it queued:
//! `struct input_event` records, parsed here. The kernel is asked to stamp
//! events with `CLOCK_MONOTONIC` (`EVIOCSCLOCKID`), so the last input is
//! known to the microsecond however seldom the monitor polls; a device that
//! refuses is stamped with the time its events were read. The directory is
//! rescanned every few seconds so that a keyboard plugged in later counts,
//! and a device that is unplugged (`ENODEV`) is dropped.
//!
//! Needs read access to the devices: root, or membership of the `input`
//! group.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::monotonic_now;
use crate::idle::{IdleError, IdleSource};

/// Where Linux puts the input devices.
pub const DEFAULT_INPUT_DIR: &str = "/dev/input";

/// Size of `struct input_event` on 64-bit Linux: `struct timeval` (two
/// 64-bit fields), `__u16 type`, `__u16 code`, `__s32 value`.
const RECORD: usize = 24;
const _: () = assert!(std::mem::size_of::<libc::input_event>() == RECORD, "input_event is 24 bytes on 64-bit Linux");

const EV_KEY: u16 = 0x01;
const EV_REL: u16 = 0x02;
const EV_ABS: u16 = 0x03;

/// How often the directory is rescanned for new devices.
const RESCAN: Duration = Duration::from_secs(5);

nix::ioctl_read_buf!(eviocgbit_types, b'E', 0x20, u8);
nix::ioctl_write_ptr!(eviocsclockid, b'E', 0xa0, libc::c_int);

/// One `struct input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InputEvent {
    time: Duration,
    kind: u16,
    code: u16,
    value: i32,
}

impl InputEvent {
    /// Decodes one record (native byte order: it comes from this kernel).
    fn decode(record: &[u8; RECORD]) -> InputEvent {
        let i64_at = |at: usize| i64::from_ne_bytes(record[at..at + 8].try_into().unwrap_or([0; 8]));
        let u16_at = |at: usize| u16::from_ne_bytes([record[at], record[at + 1]]);
        let secs = i64_at(0).max(0) as u64;
        let micros = i64_at(8).clamp(0, 999_999) as u64;
        InputEvent {
            time: Duration::from_secs(secs) + Duration::from_micros(micros),
            kind: u16_at(16),
            code: u16_at(18),
            value: i32::from_ne_bytes([record[20], record[21], record[22], record[23]]),
        }
    }

    /// Keys, buttons and pointer motion: what a user does. Not sync
    /// markers, LEDs, switches (a lid) or misc scan codes.
    fn is_user_input(&self) -> bool {
        matches!(self.kind, EV_KEY | EV_REL | EV_ABS)
    }
}

/// An open input device.
#[derive(Debug)]
struct InputDevice {
    path: PathBuf,
    file: File,
    /// Whether the kernel stamps its events with `CLOCK_MONOTONIC`.
    monotonic_stamps: bool,
}

impl InputDevice {
    /// Opens `path` if it reports keys or pointer motion; `Ok(None)` if not.
    fn open(path: &Path) -> std::io::Result<Option<InputDevice>> {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
        let mut types = [0u8; 4]; // EV_MAX is 0x1f
                                  // SAFETY: the fd is open for the call's duration and `types` is a
                                  // writable buffer whose length the macro passes to the kernel.
        unsafe { eviocgbit_types(file.as_raw_fd(), &mut types) }.map_err(std::io::Error::from)?;
        let has = |ev: u16| types[usize::from(ev / 8)] & (1 << (ev % 8)) != 0;
        if !(has(EV_KEY) || has(EV_REL) || has(EV_ABS)) {
            return Ok(None);
        }
        let clock: libc::c_int = libc::CLOCK_MONOTONIC;
        // SAFETY: the fd is open and `clock` outlives the call, which only reads it.
        let monotonic_stamps = unsafe { eviocsclockid(file.as_raw_fd(), &clock) }.is_ok();
        Ok(Some(InputDevice { path: path.to_owned(), file, monotonic_stamps }))
    }

    /// Reads every queued event; the time of the last user input among
    /// them (on `CLOCK_MONOTONIC`), if any.
    fn drain(&mut self) -> std::io::Result<Option<Duration>> {
        let mut last = None;
        let mut buf = [0u8; RECORD * 64];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => return Ok(last),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(last),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // The kernel only hands out whole records.
            for record in buf[..n].chunks_exact(RECORD) {
                let Ok(record) = <&[u8; RECORD]>::try_from(record) else { continue };
                let event = InputEvent::decode(record);
                if event.is_user_input() {
                    last = Some(if self.monotonic_stamps { event.time } else { monotonic_now() });
                }
            }
        }
    }
}

/// Idle time from the input devices under a directory.
#[derive(Debug)]
pub struct EvdevSource {
    dir: PathBuf,
    devices: Vec<InputDevice>,
    /// Last input, on `CLOCK_MONOTONIC` (the source's start before any).
    last_input: Duration,
    last_scan: Duration,
}

impl EvdevSource {
    /// Opens every device under `dir` (normally [`DEFAULT_INPUT_DIR`]) that
    /// reports keys or pointer motion.
    ///
    /// # Errors
    /// The directory cannot be listed, or no such device can be opened
    /// (the message says if permissions were the reason).
    pub fn open(dir: &Path) -> Result<EvdevSource, IdleError> {
        let now = monotonic_now();
        let mut source = EvdevSource { dir: dir.to_owned(), devices: Vec::new(), last_input: now, last_scan: now };
        let denied = source.scan()?;
        if source.devices.is_empty() {
            let detail = if denied.is_empty() {
                String::new()
            } else {
                format!(" (permission denied on {}: run as root or join the `input` group)", denied.join(", "))
            };
            return Err(IdleError::NoInputDevices { dir: dir.to_owned(), detail });
        }
        Ok(source)
    }

    /// The devices watched.
    pub fn devices(&self) -> impl Iterator<Item = &Path> {
        self.devices.iter().map(|d| d.path.as_path())
    }

    /// Opens the devices not open yet; returns the ones permission was
    /// denied for.
    fn scan(&mut self) -> Result<Vec<String>, IdleError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| IdleError::InputDir { dir: self.dir.clone(), source })?;
        let mut denied = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_event = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("event"));
            if !is_event || self.devices.iter().any(|d| d.path == path) {
                continue;
            }
            match InputDevice::open(&path) {
                Ok(Some(device)) => {
                    tracing::debug!("evdev: watching {}", path.display());
                    self.devices.push(device);
                }
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::PermissionDenied => denied.push(path.display().to_string()),
                Err(e) => tracing::debug!("evdev: skipping {}: {e}", path.display()),
            }
        }
        Ok(denied)
    }
}

impl IdleSource for EvdevSource {
    fn name(&self) -> String {
        format!("evdev ({} devices under {})", self.devices.len(), self.dir.display())
    }

    fn idle_for(&mut self) -> Result<Duration, IdleError> {
        let now = monotonic_now();
        if now.saturating_sub(self.last_scan) >= RESCAN {
            self.last_scan = now;
            self.scan()?;
        }
        let mut error = None;
        self.devices.retain_mut(|device| match device.drain() {
            Ok(last) => {
                if let Some(t) = last {
                    self.last_input = self.last_input.max(t);
                }
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                tracing::info!("evdev: {} went away", device.path.display());
                false
            }
            Err(source) => {
                error.get_or_insert(IdleError::InputRead { device: device.path.clone(), source });
                true
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(monotonic_now().saturating_sub(self.last_input)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn record(secs: i64, micros: i64, kind: u16, code: u16, value: i32) -> [u8; RECORD] {
        let mut r = [0u8; RECORD];
        r[0..8].copy_from_slice(&secs.to_ne_bytes());
        r[8..16].copy_from_slice(&micros.to_ne_bytes());
        r[16..18].copy_from_slice(&kind.to_ne_bytes());
        r[18..20].copy_from_slice(&code.to_ne_bytes());
        r[20..24].copy_from_slice(&value.to_ne_bytes());
        r
    }

    #[test]
    fn decodes_a_record() {
        let e = InputEvent::decode(&record(12, 345_678, EV_KEY, 30, 1));
        assert_eq!(e, InputEvent { time: Duration::from_micros(12_345_678), kind: EV_KEY, code: 30, value: 1 });
    }

    #[test]
    fn keys_and_motion_are_input_sync_and_leds_are_not() {
        for kind in [EV_KEY, EV_REL, EV_ABS] {
            assert!(InputEvent::decode(&record(0, 0, kind, 0, 0)).is_user_input());
        }
        for kind in [0x00 /* SYN */, 0x04 /* MSC */, 0x05 /* SW */, 0x11 /* LED */] {
            assert!(!InputEvent::decode(&record(0, 0, kind, 0, 0)).is_user_input());
        }
    }

    /// The read path over a real non-blocking fd: a pipe standing in for
    /// a device.
    #[test]
    fn drain_reports_the_last_user_input() {
        let (fd, writer) = nix::unistd::pipe().unwrap();
        let mut writer = File::from(writer);
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let mut device = InputDevice { path: "pipe".into(), file: File::from(fd), monotonic_stamps: true };
        assert_eq!(device.drain().unwrap(), None);

        let mut bytes = Vec::new();
        bytes.extend_from_slice(&record(5, 0, EV_REL, 0, 3));
        bytes.extend_from_slice(&record(5, 0, 0, 0, 0));
        bytes.extend_from_slice(&record(7, 250_000, EV_KEY, 30, 1));
        bytes.extend_from_slice(&record(9, 0, 0x11, 0, 1)); // an LED: not input
        writer.write_all(&bytes).unwrap();
        assert_eq!(device.drain().unwrap(), Some(Duration::from_millis(7_250)));
        assert_eq!(device.drain().unwrap(), None);
    }

    #[test]
    fn files_that_are_not_input_devices_are_passed_over() {
        // A regular file answers EVIOCGBIT with ENOTTY.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("event0"), [0u8; RECORD]).unwrap();
        let err = EvdevSource::open(dir.path()).unwrap_err();
        assert!(matches!(err, IdleError::NoInputDevices { .. }), "{err}");
    }

    #[test]
    fn a_directory_without_devices_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = EvdevSource::open(dir.path()).unwrap_err();
        assert!(matches!(err, IdleError::NoInputDevices { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
