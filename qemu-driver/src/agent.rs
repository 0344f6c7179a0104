//! The QEMU guest agent, reached through the VM's virtio-serial channel.
//!
//! A guest stopped for a move, or resumed from a checkpoint, wakes up with
//! the clock it had when it stopped: its kernel does not know time passed.
//! Where the guest runs `qemu-ga`, [`GuestAgent::set_time`] gives it the
//! host's time. A guest without the agent keeps its late clock until its
//! own NTP client notices (the README says so); the channel then simply
//! never answers, which [`GuestAgent::connect`] reports as
//! [`QemuError::NoGuestAgent`] after a short wait.
//!
//! The protocol is QMP-like JSON lines. The channel is a byte pipe that
//! may hold a half-written reply from an earlier client, so each session
//! starts with `guest-sync-delimited`: the agent answers it after a 0xFF
//! byte, and everything before that byte is stale.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::error::{QemuError, Result};

/// How long the agent may take to answer the sync. Under TCG a busy guest
/// answers within a second or two.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// A session with one VM's guest agent.
#[derive(Debug)]
pub struct GuestAgent {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
}

impl GuestAgent {
    /// Connects to the agent channel at `socket` (see
    /// [`crate::VmSpec::agent_socket`]) and synchronises with the agent.
    ///
    /// # Errors
    /// [`QemuError::QmpConnect`] when the socket does not accept,
    /// [`QemuError::NoGuestAgent`] when nothing answers in the guest.
    pub fn connect(socket: &Path) -> Result<GuestAgent> {
        let stream = UnixStream::connect(socket)
            .map_err(|source| QemuError::QmpConnect { socket: socket.to_owned(), source })?;
        let mut agent = GuestAgent { socket: socket.to_owned(), reader: BufReader::new(stream) };
        agent.sync()?;
        Ok(agent)
    }

    fn sync(&mut self) -> Result<()> {
        // Differs between sessions, so a stale answer to an earlier sync
        // is not taken for this one.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let id = u64::from(std::process::id()) << 32 | u64::from(nanos);
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let request = json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } });
        // A 0xFF first makes the agent drop any half-read request.
        let mut line = vec![0xff];
        line.extend(request.to_string().bytes());
        line.push(b'\n');
        self.io(|reader| reader.get_mut().write_all(&line), deadline)?;
        loop {
            let mut skipped = Vec::new();
            self.io(|reader| reader.read_until(0xff, &mut skipped).map(drop), deadline)?;
            if skipped.last() != Some(&0xff) {
                return Err(self.no_agent("the channel closed"));
            }
            let reply = self.read_reply(deadline)?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
    }

    /// Sets the guest's clock to the host's time now.
    ///
    /// # Errors
    /// [`QemuError::Command`] if the agent refuses; I/O errors as
    /// [`QemuError::NoGuestAgent`].
    pub fn set_time(&mut self) -> Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        self.set_time_to(now)
    }

    /// Sets the guest's clock to `nanos` since the epoch.
    ///
    /// # Errors
    /// As [`GuestAgent::set_time`].
    pub fn set_time_to(&mut self, nanos: u64) -> Result<()> {
        self.execute("guest-set-time", json!({ "time": nanos }))?;
        Ok(())
    }

    /// The guest's clock, in nanoseconds since the epoch.
    ///
    /// # Errors
    /// As [`GuestAgent::set_time`].
    pub fn time(&mut self) -> Result<u64> {
        let value = self.execute("guest-get-time", json!({}))?;
        value.as_u64().ok_or_else(|| self.no_agent("guest-get-time returned no number"))
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut line = json!({ "execute": command, "arguments": arguments }).to_string();
        line.push('\n');
        self.io(|reader| reader.get_mut().write_all(line.as_bytes()), deadline)?;
        let reply = self.read_reply(deadline)?;
        if let Some(error) = reply.get("error") {
            let text = |key| error.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
            return Err(QemuError::Command { command: command.to_owned(), class: text("class"), desc: text("desc") });
        }
        Ok(reply.get("return").cloned().unwrap_or(Value::Null))
    }

    fn read_reply(&mut self, deadline: Instant) -> Result<Value> {
        let mut line = Vec::new();
        self.io(|reader| reader.read_until(b'\n', &mut line).map(drop), deadline)?;
        serde_json::from_slice(&line).map_err(|e| self.no_agent(&format!("it sent something that is not JSON ({e})")))
    }

    /// Runs one blocking step on the stream with the time left until
    /// `deadline` as its timeout.
    fn io<T>(
        &mut self,
        step: impl FnOnce(&mut BufReader<UnixStream>) -> std::io::Result<T>,
        deadline: Instant,
    ) -> Result<T> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let stream = self.reader.get_ref();
        let set = stream.set_read_timeout(Some(left)).and_then(|()| stream.set_write_timeout(Some(left)));
        set.map_err(|e| self.no_agent(&e.to_string()))?;
        step(&mut self.reader).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.no_agent("no answer"),
            _ => self.no_agent(&e.to_string()),
        })
    }

    fn no_agent(&self, detail: &str) -> QemuError {
        QemuError::NoGuestAgent { socket: self.socket.clone(), detail: detail.to_owned() }
    }
}

/// Sets the clock of the guest behind the agent channel `socket` (VM
/// `vm`) to the host's, on a thread of its own: a guest without the agent
/// takes a few seconds to say nothing, and a move must not wait for that.
/// The outcome goes to the log.
pub fn set_clock_in_background(vm: String, socket: PathBuf) {
    std::thread::spawn(move || match GuestAgent::connect(&socket).and_then(|mut agent| agent.set_time()) {
        Ok(()) => tracing::info!(vm = %vm, "guest clock set through its agent"),
        Err(e) => tracing::warn!(vm = %vm, "guest clock not set: {e}"),
    });
}
