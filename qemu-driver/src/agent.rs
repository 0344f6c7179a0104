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
//! A guest resumed from an *older* state (a failover to the desktop's
//! checkpoint) also has TCP connections whose peers have moved on: both
//! ends would retransmit with growing pauses for many minutes.
//! [`GuestAgent::reset_tcp_connections`] has the guest reset them
//! (`ss -K`, iproute2), so its peers see a reset at once and reconnect.
//!
//! The protocol is QMP-like JSON lines. The channel is a byte pipe that
//! may hold a half-written reply from an earlier client, so each session
//! starts with `guest-sync-delimited`: the agent answers it after a 0xFF
//! byte, and everything before that byte is stale.

use std::io::{BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{QemuError, Result};

/// How long the agent may take to answer the sync. Under TCG a busy guest
/// answers within a second or two.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a program run in the guest may take.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest reply taken from the agent: the guest writes it, so a guest
/// that never ends a line must not grow the daemon's memory. The largest
/// honest one, a program's base64 output, is far smaller.
const MAX_REPLY: usize = 4 << 20;

/// How a guest came back to life, for [`settle_guest_in_background`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// Where it stopped (a move, a host shutdown's save): only its clock
    /// is behind.
    WhereItStopped,
    /// From an older state (a failover to the desktop's checkpoint): its
    /// clock is behind and its TCP connections are out of step with their
    /// peers, so they are reset too.
    FromOlderState,
}

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
            self.io(
                |reader| crate::line::read_until_within(reader, 0xff, &mut skipped, MAX_REPLY).map(drop),
                deadline,
            )?;
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

    /// Resets every established TCP connection of the guest (`ss -K state
    /// established`): each peer receives a reset and its application
    /// reconnects. Returns how many connections there were.
    ///
    /// # Errors
    /// [`QemuError::GuestProgram`] when `ss` fails or is missing in the
    /// guest (iproute2; its kernel needs `CONFIG_INET_DIAG_DESTROY`, which
    /// Debian's has), [`QemuError::Command`] when the agent refuses to run
    /// programs.
    pub fn reset_tcp_connections(&mut self) -> Result<usize> {
        let listed = self.run("ss", &["-K", "-t", "-n", "-H", "state", "established"])?;
        Ok(listed.lines().filter(|line| !line.trim().is_empty()).count())
    }

    /// Runs `program` with `args` in the guest and returns what it printed
    /// on stdout, if it exits with status 0 within [`PROGRAM_TIMEOUT`].
    ///
    /// # Errors
    /// [`QemuError::GuestProgram`] when the program fails or does not end
    /// in time, [`QemuError::Command`] when the agent refuses to run it.
    pub fn run(&mut self, program: &str, args: &[&str]) -> Result<String> {
        let call = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        let failed = |outcome: String| QemuError::GuestProgram { program: call.clone(), outcome };
        let started = self.execute("guest-exec", json!({ "path": program, "arg": args, "capture-output": true }))?;
        let pid = started.get("pid").and_then(Value::as_i64).ok_or_else(|| self.no_agent("guest-exec gave no pid"))?;
        let deadline = Instant::now() + PROGRAM_TIMEOUT;
        loop {
            let status = self.execute("guest-exec-status", json!({ "pid": pid }))?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let text = |key| {
                    let data = status.get(key).and_then(Value::as_str).unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                return match status.get("exitcode").and_then(Value::as_i64) {
                    Some(0) => Ok(text("out-data")),
                    Some(code) => Err(failed(format!("exited with status {code}: {}", text("err-data").trim()))),
                    None => {
                        Err(failed(format!("was killed by signal {}", status.get("signal").unwrap_or(&Value::Null))))
                    }
                };
            }
            if Instant::now() >= deadline {
                return Err(failed(format!("did not end within {} s", PROGRAM_TIMEOUT.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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
        self.io(|reader| crate::line::read_until_within(reader, b'\n', &mut line, MAX_REPLY).map(drop), deadline)?;
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
/// `vm`) to the host's and, for a guest resumed from an older state, resets
/// its TCP connections; on a thread of its own: a guest without the agent
/// takes a few seconds to say nothing, and a move must not wait for that.
/// The outcome goes to the log.
pub fn settle_guest_in_background(vm: String, socket: PathBuf, resumed: Resumed) {
    std::thread::spawn(move || {
        let mut agent = match GuestAgent::connect(&socket) {
            Ok(agent) => agent,
            Err(e) => return tracing::warn!(vm = %vm, "guest clock not set: {e}"),
        };
        match agent.set_time() {
            Ok(()) => tracing::info!(vm = %vm, "guest clock set through its agent"),
            Err(e) => tracing::warn!(vm = %vm, "guest clock not set: {e}"),
        }
        if resumed == Resumed::FromOlderState {
            match agent.reset_tcp_connections() {
                Ok(n) => tracing::info!(vm = %vm, "reset the guest's {n} TCP connections (their peers had moved on)"),
                Err(e) => tracing::warn!(
                    vm = %vm,
                    "the guest's TCP connections were not reset ({e}): they stay out of step with their peers \
                     until those time out"
                ),
            }
        }
    });
}
