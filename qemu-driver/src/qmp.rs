//! A QMP client over a Unix socket.
//!
//! QMP is line-delimited JSON. After the greeting and `qmp_capabilities`,
//! each command gets exactly one reply (`return` or `error`), but
//! asynchronous events (`STOP`, `RESUME`, `MIGRATION`, ...) may arrive in
//! between. We only ever have one command in flight, and each carries an
//! `id` that QEMU echoes in its reply: a reply with another id answers a
//! command that timed out earlier (QEMU's main loop was held) and is
//! dropped, so it is never taken for the answer to the next command.
//! Events seen on the way are queued for [`Qmp::wait_event`] so none is
//! lost to a command that happened to be waiting at the time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{QemuError, Result};

/// How long a command may take to be answered. QMP commands return at once
/// (long jobs such as migration report progress through queries), so this
/// only trips when QEMU hangs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Events kept for [`Qmp::wait_event`]; older ones are dropped, so a
/// long-lived connection nobody asks for events on does not grow forever.
const MAX_QUEUED_EVENTS: usize = 256;

/// A connection to one QEMU's QMP monitor, past capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    /// Bytes of a message not yet terminated by a newline; kept across read
    /// timeouts so a message split by one is not lost.
    partial: Vec<u8>,
    events: VecDeque<Value>,
    /// The `id` of the next command.
    next_id: u64,
}

impl Qmp {
    /// Connects to the QMP socket at `socket`, retrying until it appears and
    /// accepts or `timeout` passes, then reads the greeting and enters
    /// command mode.
    ///
    /// # Errors
    /// [`QemuError::QmpConnect`] when the socket never accepts; I/O, protocol or
    /// timeout errors from the greeting and `qmp_capabilities`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(source) if Instant::now() >= deadline => {
                    return Err(QemuError::QmpConnect { socket: socket.to_owned(), source })
                }
                Err(_) => sleep(Duration::from_millis(50)),
            }
        };
        Qmp::greeted(socket, stream, deadline, timeout)
    }

    /// Connects once to the QMP socket of a QEMU known to run (one taken
    /// over from an earlier daemon) and waits up to `patience` for its
    /// greeting. A QEMU whose main loop is held (under TCG, by a vCPU
    /// stuck in a page fault) greets only once it is free; a single
    /// connection waits for that, where retries would pile up in the
    /// socket's backlog.
    ///
    /// # Errors
    /// [`QemuError::QmpConnect`] when the socket does not accept at once;
    /// I/O (QEMU ended), protocol or timeout errors from the greeting and
    /// `qmp_capabilities`.
    pub fn connect_once(socket: &Path, patience: Duration) -> Result<Qmp> {
        let stream = UnixStream::connect(socket)
            .map_err(|source| QemuError::QmpConnect { socket: socket.to_owned(), source })?;
        Qmp::greeted(socket, stream, Instant::now() + patience, patience)
    }

    /// Reads the greeting on `stream` by `deadline` and enters command mode.
    fn greeted(socket: &Path, stream: UnixStream, deadline: Instant, timeout: Duration) -> Result<Qmp> {
        let mut qmp = Qmp {
            socket: socket.to_owned(),
            reader: BufReader::new(stream),
            partial: Vec::new(),
            events: VecDeque::new(),
            next_id: 0,
        };
        let greeting = qmp.read_message(deadline, timeout, "the QMP greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(format!("expected a greeting, got {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The socket this connection is on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The VM's run state as QEMU names it: `running`, `paused`,
    /// `shutdown` (the guest powered off and QEMU stayed), `postmigrate`...
    ///
    /// # Errors
    /// As [`Qmp::execute`].
    pub fn run_state(&mut self) -> Result<String> {
        let status = self.execute("query-status", None)?;
        Ok(status["status"].as_str().unwrap_or("unknown").to_owned())
    }

    /// Runs `command` with optional `arguments` and returns the value of its
    /// `return` member. Events that arrive meanwhile are queued.
    ///
    /// # Errors
    /// [`QemuError::Command`] with QEMU's description when QEMU rejects the
    /// command; I/O, protocol or timeout errors otherwise.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.request(command, arguments, None)
    }

    /// Lends `file` to QEMU for the duration of `use_it`: the descriptor
    /// goes over the socket into a new fd set (`add-fd`), `use_it` gets the
    /// name QEMU opens it by (`/dev/fdset/N`, which QEMU's own opens accept
    /// wherever they take a file name), and the set is removed afterwards,
    /// whether `use_it` succeeded or not. QEMU, which may run as an
    /// unprivileged user by then, thus never opens a path of ours; it gets
    /// only the access `file` was opened with, which must be the access the
    /// command opens its file with (write-only for a migration's or a
    /// screenshot's output, read-only for a migration's input).
    ///
    /// # Errors
    /// As [`Qmp::execute`] for `add-fd` and `remove-fd`, and `use_it`'s own.
    pub(crate) fn with_file_lent<T>(
        &mut self,
        file: &File,
        use_it: impl FnOnce(&mut Qmp, &str) -> Result<T>,
    ) -> Result<T> {
        let added = self.request("add-fd", None, Some(file.as_fd()))?;
        let set =
            added["fdset-id"].as_u64().ok_or_else(|| self.protocol(format!("add-fd returned no fdset-id: {added}")))?;
        let used = use_it(self, &format!("/dev/fdset/{set}"));
        // QEMU closes its copy when the command is done with it; this closes
        // the one the set holds.
        let removed = self.execute("remove-fd", Some(json!({ "fdset-id": set })));
        let value = used?;
        removed?;
        Ok(value)
    }

    /// Sends `command` (with `fd` as ancillary data, if any) and waits for
    /// its reply.
    fn request(&mut self, command: &str, arguments: Option<Value>, fd: Option<BorrowedFd<'_>>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        tracing::debug!(socket = %self.socket.display(), %request, "QMP command");
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        let stream = self.reader.get_mut();
        let sent = match fd {
            None => stream.write_all(&line),
            Some(fd) => send_with_fd(stream, &line, fd),
        };
        sent.map_err(|source| self.io_error(source))?;

        let deadline = Instant::now() + REPLY_TIMEOUT;
        let what = format!("the reply to QMP command {command}");
        loop {
            let mut message = self.read_message(deadline, REPLY_TIMEOUT, &what)?;
            if message.get("event").is_some() {
                self.queue_event(message);
            } else if message.get("id").is_some_and(|echoed| echoed != id) {
                tracing::debug!(socket = %self.socket.display(), %message, "QMP reply to a command given up on, dropped");
            } else if let Some(reply) = message.get_mut("return") {
                return Ok(reply.take());
            } else if let Some(error) = message.get("error") {
                let field = |name: &str| error[name].as_str().unwrap_or("?").to_owned();
                return Err(QemuError::Command {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            } else {
                return Err(self.protocol(format!("expected a reply to {command}, got {message}")));
            }
        }
    }

    /// Waits for the asynchronous event `name` (e.g. `"RESUME"`) and returns
    /// the whole event object. An event already queued while a command was
    /// waiting counts, oldest first.
    ///
    /// # Errors
    /// [`QemuError::Timeout`] when it does not arrive within `timeout`; I/O or
    /// protocol errors.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value> {
        if let Some(at) = self.events.iter().position(|event| is_event(event, name)) {
            return Ok(self.events.remove(at).expect("position() just found this index"));
        }
        let deadline = Instant::now() + timeout;
        let what = format!("QMP event {name}");
        loop {
            let message = self.read_message(deadline, timeout, &what)?;
            if is_event(&message, name) {
                return Ok(message);
            }
            if message.get("id").is_some() {
                tracing::debug!(socket = %self.socket.display(), %message, "QMP reply to a command given up on, dropped");
                continue;
            }
            if message.get("event").is_none() {
                return Err(self.protocol(format!("a reply with no command pending: {message}")));
            }
            self.queue_event(message);
        }
    }

    fn queue_event(&mut self, event: Value) {
        tracing::debug!(socket = %self.socket.display(), %event, "QMP event");
        if self.events.len() == MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Reads one complete JSON message, waiting at most until `deadline`
    /// (`timeout` after the wait began, for the error message).
    fn read_message(&mut self, deadline: Instant, timeout: Duration, what: &str) -> Result<Value> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(QemuError::Timeout {
                    what: format!("{what} on {}", self.socket.display()),
                    secs: timeout.as_secs_f64(),
                });
            }
            self.reader.get_ref().set_read_timeout(Some(remaining)).map_err(|source| self.io_error(source))?;
            match crate::line::read_until_within(&mut self.reader, b'\n', &mut self.partial, MAX_QMP_LINE) {
                Ok(0) => {
                    let eof = io::Error::new(ErrorKind::UnexpectedEof, "QEMU closed the QMP connection");
                    return Err(self.io_error(eof));
                }
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    return serde_json::from_slice(&line)
                        .map_err(|err| self.protocol(format!("not JSON ({err}): {}", String::from_utf8_lossy(&line))));
                }
                // No newline yet: the next read returns 0 if QEMU went away.
                Ok(_) => {}
                Err(err) if is_retryable(&err) => {}
                Err(source) => return Err(self.io_error(source)),
            }
        }
    }

    fn io_error(&self, source: io::Error) -> QemuError {
        QemuError::QmpIo { socket: self.socket.clone(), source }
    }

    fn protocol(&self, detail: String) -> QemuError {
        QemuError::QmpProtocol { socket: self.socket.clone(), detail }
    }
}

/// Longest QMP message taken from QEMU: its largest answers (`query-*` of a
/// big machine) are a few hundred KiB.
const MAX_QMP_LINE: usize = 16 << 20;

/// Writes `line` to `stream` with `fd` attached to its first byte
/// (SCM_RIGHTS), which is how QEMU takes a descriptor for the command
/// that byte starts.
fn send_with_fd(stream: &mut UnixStream, line: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[io::IoSlice::new(line)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    stream.write_all(&line[sent..])
}

fn is_event(message: &Value, name: &str) -> bool {
    message.get("event").and_then(Value::as_str) == Some(name)
}

/// A read timeout (the deadline is checked by the caller) or a signal.
fn is_retryable(err: &io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A QMP monitor that greets, then answers each command line with the
    /// lines `answer` gives for it (the command as JSON).
    fn monitor(socket: &Path, answer: impl Fn(&Value) -> Vec<Value> + Send + 'static) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            writeln!(writer, "{}", json!({ "QMP": { "version": {}, "capabilities": [] } })).unwrap();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let command: Value = serde_json::from_str(&line).unwrap();
                for reply in answer(&command) {
                    writeln!(writer, "{reply}").unwrap();
                }
            }
        })
    }

    #[test]
    fn a_late_reply_to_an_earlier_command_is_not_taken_for_the_next_ones() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        // Before each reply, the one QEMU owed a command given up on, and an event.
        let server = monitor(&socket, |command| {
            let status = if command["execute"] == "query-status" { json!({ "status": "running" }) } else { json!({}) };
            vec![
                json!({ "return": {}, "id": 999 }),
                json!({ "event": "RESUME", "data": {} }),
                json!({ "return": status, "id": command["id"] }),
            ]
        });
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        assert_eq!(qmp.run_state().unwrap(), "running");
        assert!(qmp.wait_event("RESUME", Duration::from_secs(5)).is_ok());
        drop(qmp);
        server.join().unwrap();
    }
}
