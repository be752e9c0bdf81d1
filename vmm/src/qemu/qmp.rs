//! A minimal QMP client: commands one at a time, events recorded.
//!
//! QMP (docs/interop/qmp-spec.rst in QEMU) sends one JSON object per line:
//! a greeting, then `{"return": ..}` / `{"error": ..}` answers in command
//! order, interleaved with `{"event": ..}` notifications.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::VmmError;

/// How long a QMP command may take before the VM counts as unresponsive.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Events the machine cares about, as they arrived.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// The `reason` of the first SHUTDOWN event (`guest-shutdown`, `guest-reset`, ...).
    pub shutdown_reason: Option<String>,
    /// The reader reached the end of the stream (QEMU closed it, or exited):
    /// every event QEMU sent is in.
    pub closed: bool,
}

/// QEMU's answer to a command.
#[derive(Debug)]
enum Answer {
    /// `{"return": ..}` (or the greeting).
    Return(Value),
    /// `{"error": {"desc": ..}}`: QEMU's description.
    Error(String),
}

/// A connected QMP session.
#[derive(Debug)]
pub(crate) struct Qmp {
    writer: Mutex<UnixStream>,
    answers: Mutex<Receiver<Answer>>,
    events: Arc<Mutex<Events>>,
}

impl Qmp {
    /// Reads the greeting and negotiates capabilities.
    pub(crate) fn connect(stream: UnixStream) -> Result<Self, VmmError> {
        let reader = stream
            .try_clone()
            .map_err(|e| VmmError::Control(format!("cloning the QMP socket: {e}")))?;
        let (tx, rx) = channel();
        let events = Arc::new(Mutex::new(Events::default()));
        let ev = Arc::clone(&events);
        std::thread::Builder::new()
            .name("ktstr-qmp".into())
            .spawn(move || {
                let mut greeted = false;
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if let Some(name) = v.get("event").and_then(Value::as_str) {
                        if name == "SHUTDOWN" {
                            let mut e = ev.lock().unwrap_or_else(|p| p.into_inner());
                            if e.shutdown_reason.is_none() {
                                e.shutdown_reason =
                                    v["data"]["reason"].as_str().map(str::to_string);
                            }
                        }
                    } else if v.get("QMP").is_some() && !greeted {
                        greeted = true;
                        let _ = tx.send(Answer::Return(v));
                    } else if let Some(r) = v.get("return") {
                        let _ = tx.send(Answer::Return(r.clone()));
                    } else if let Some(e) = v.get("error") {
                        let _ = tx.send(Answer::Error(
                            e["desc"].as_str().unwrap_or("unknown error").to_string(),
                        ));
                    }
                }
                ev.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            })
            .map_err(|e| VmmError::Control(format!("starting the QMP reader: {e}")))?;
        let qmp = Qmp {
            writer: Mutex::new(stream),
            answers: Mutex::new(rx),
            events,
        };
        qmp.answer("greeting")?;
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn answer(&self, what: &str) -> Result<Value, VmmError> {
        let rx = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Answer::Return(v)) => Ok(v),
            Ok(Answer::Error(desc)) => Err(VmmError::Qmp {
                command: what.to_string(),
                desc,
            }),
            Err(_) => Err(VmmError::Control(format!(
                "no QMP answer to {what} within {COMMAND_TIMEOUT:?} (VM gone or hung)"
            ))),
        }
    }

    /// Runs a command without arguments and returns its answer.
    pub(crate) fn execute(&self, command: &str) -> Result<Value, VmmError> {
        self.execute_with(command, None)
    }

    /// Runs a command with `arguments` (a JSON object) and returns its answer.
    pub(crate) fn execute_with(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmmError> {
        {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut msg = serde_json::json!({ "execute": command });
            if let Some(a) = arguments {
                msg["arguments"] = a;
            }
            let msg = format!("{msg}\n");
            w.write_all(msg.as_bytes())
                .map_err(|e| VmmError::Control(format!("sending QMP {command}: {e}")))?;
        }
        self.answer(command)
    }

    /// The SHUTDOWN reason, if QEMU reported one. Call it once QEMU has
    /// exited: it waits up to `patience` for the reader to take in the rest
    /// of the stream, since QEMU writes the event just before it exits and
    /// a loaded host can run the reader thread after the exit is seen.
    pub(crate) fn shutdown_reason(&self, patience: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            {
                let e = self.events.lock().unwrap_or_else(|p| p.into_inner());
                if e.shutdown_reason.is_some() || e.closed {
                    return e.shutdown_reason.clone();
                }
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
