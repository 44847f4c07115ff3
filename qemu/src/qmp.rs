//! A QMP (QEMU Machine Protocol) client: JSON lines over a unix socket.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// How long a command may take by default (see [`Qmp::set_timeout`]).
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One QMP connection, in command mode.
///
/// QEMU serves one QMP client per `-qmp` socket at a time: drop a `Qmp` before connecting
/// another one. Asynchronous events that arrive while waiting for a reply are kept, in order,
/// and can be read with [`Qmp::events`], [`Qmp::take_events`] or [`Qmp::wait_event`].
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    greeting: Value,
    events: Vec<Value>,
    next_id: u64,
    timeout: Duration,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, retrying until it accepts or `timeout` passes (QEMU
    /// creates it shortly after starting), reads the greeting and enters command mode with
    /// `qmp_capabilities`.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Qmp> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if Instant::now() < deadline
                        && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io(format!("connecting to QMP socket {}", path.display()), e)),
            }
        };
        let writer = stream.try_clone().map_err(|e| Error::io("cloning the QMP socket", e))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            greeting: Value::Null,
            events: Vec::new(),
            next_id: 1,
            timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let greeting = qmp.read_message(left.max(Duration::from_secs(1)))?;
        if greeting.get("QMP").is_none() {
            return Err(Error::QmpProtocol(format!("unexpected greeting: {greeting}")));
        }
        qmp.greeting = greeting;
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    /// The greeting QEMU sent (contains its version).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Sets how long [`Qmp::execute`] waits for a reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs one command and returns its `return` value. `args` is sent as `arguments` unless it
    /// is `null`. A QMP error reply becomes [`Error::QmpCommand`]. Events arriving meanwhile are
    /// kept.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(cmd, args, id)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::QmpProtocol(format!(
                    "no reply to {cmd} within {:.1} s",
                    self.timeout.as_secs_f64()
                )));
            }
            let msg = self.read_message(left)?;
            if let Some(reply) = self.reply_to(id, cmd, msg) {
                return reply;
            }
        }
    }

    /// Asks the guest to power down (an ACPI power button press). The guest may ignore it.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", Value::Null).map(drop)
    }

    /// Tells QEMU to exit at once. QEMU may close the connection before replying; that counts
    /// as success.
    pub fn quit(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.send("quit", Value::Null, id)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_message(left.max(Duration::from_millis(1))) {
                Ok(msg) => {
                    if let Some(reply) = self.reply_to(id, "quit", msg) {
                        return reply.map(drop);
                    }
                }
                Err(Error::QmpProtocol(m)) if m == CLOSED => return Ok(()),
                Err(Error::Io { source, .. })
                    if matches!(source.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The asynchronous events received so far and not yet taken, oldest first (each a JSON
    /// object with `event`, `data` and `timestamp`).
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// Removes and returns the events received so far.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Waits for an event named `name` (e.g. `SHUTDOWN`), first among those already received;
    /// removes it from the kept events and returns it.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return Ok(self.events.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::QmpProtocol(format!(
                    "no {name} event within {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
            let msg = self.read_message(left)?;
            if msg.get("event").is_some() {
                self.events.push(msg);
            }
        }
    }

    fn send(&mut self, cmd: &str, args: Value, id: u64) -> Result<()> {
        let mut msg = json!({ "execute": cmd, "id": id });
        if !args.is_null() {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| Error::io(format!("sending QMP command {cmd}"), e))
    }

    /// Interprets one message while waiting for the reply to command `id`: keeps events,
    /// ignores replies to other commands, returns the reply to ours.
    fn reply_to(&mut self, id: u64, cmd: &str, msg: Value) -> Option<Result<Value>> {
        if msg.get("event").is_some() {
            self.events.push(msg);
            return None;
        }
        if msg.get("id").is_some_and(|got| *got != json!(id)) {
            log::debug!("ignoring QMP reply to another command: {msg}");
            return None;
        }
        if let Some(ret) = msg.get("return") {
            return Some(Ok(ret.clone()));
        }
        if let Some(err) = msg.get("error") {
            let text = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Some(Err(Error::QmpCommand {
                command: cmd.to_string(),
                class: text("class"),
                desc: text("desc"),
            }));
        }
        Some(Err(Error::QmpProtocol(format!("unexpected message: {msg}"))))
    }

    /// Reads one JSON message, waiting at most `timeout`.
    fn read_message(&mut self, timeout: Duration) -> Result<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| Error::io("setting the QMP read timeout", e))?;
        let mut line = String::new();
        loop {
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(Error::QmpProtocol(CLOSED.into())),
                Ok(_) if line.trim().is_empty() => line.clear(),
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading from the QMP socket", e)),
            }
        }
        serde_json::from_str(&line).map_err(|e| Error::QmpProtocol(format!("invalid JSON {line:?}: {e}")))
    }
}

/// The protocol error for a connection QEMU closed.
const CLOSED: &str = "QEMU closed the QMP connection";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, then answers each command from `script` (after the capabilities).
    fn fake_qemu(dir: &Path, script: Vec<Vec<String>>) -> std::thread::JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(dir.join("qmp.sock")).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream).lines();
            writeln!(out, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            let caps: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            assert_eq!(caps["execute"], "qmp_capabilities");
            writeln!(out, r#"{{"return": {{}}, "id": {}}}"#, caps["id"]).unwrap();
            for answers in script {
                let cmd: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
                for a in answers {
                    writeln!(out, "{}", a.replace("ID", &cmd["id"].to_string())).unwrap();
                }
                seen.push(cmd);
            }
            seen
        })
    }

    #[test]
    fn commands_events_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let server = fake_qemu(
            dir.path(),
            vec![
                vec![
                    r#"{"event": "POWERDOWN", "data": {}, "timestamp": {}}"#.into(),
                    r#"{"return": {}, "id": ID}"#.into(),
                ],
                vec![r#"{"return": {"status": "running"}, "id": ID}"#.into()],
                vec![r#"{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": ID}"#.into()],
                vec![],
            ],
        );
        let mut qmp = Qmp::connect(dir.path().join("qmp.sock"), Duration::from_secs(5)).unwrap();
        qmp.system_powerdown().unwrap();
        assert_eq!(qmp.events().len(), 1);
        let status = qmp.execute("query-status", json!({})).unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp.execute("bogus", json!({"a": 1})).unwrap_err();
        assert!(matches!(&err, Error::QmpCommand { class, .. } if class == "CommandNotFound"), "{err}");
        // The fake closes the connection without answering: quit still succeeds.
        qmp.quit().unwrap();
        assert_eq!(qmp.wait_event("POWERDOWN", Duration::ZERO).unwrap()["event"], "POWERDOWN");
        let seen = server.join().unwrap();
        assert_eq!(seen[2]["arguments"]["a"], 1);
        assert!(seen[0].get("arguments").is_none());
    }
}
