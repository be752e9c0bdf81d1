//! The replay side: run a recording's inputs again and compare what the host
//! sees with what it saw.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ktstr_ops::channel::{self, ChannelError, Reader};
use ktstr_vmm::{ConsoleEvent, EndReason, ReservedRegion, VmSpec};

use super::gdb::GdbHold;
use super::marks::{GateSocket, Mark};
use super::write::{end_name, lines_bytes};
use super::{Manifest, RecordingError, check_own};
use crate::channel::HostChannel;
use crate::monitor::{GateEnd, GatePlan, Moment};

/// The replay's console, written beside the recorded one for `cmp`.
pub const REPLAY_CONSOLE: &str = "replay-console.txt";
/// The replay's messages, beside the recorded ones.
pub const REPLAY_MESSAGES: &str = "replay-messages.jsonl";

/// The first point where a replay did not repeat its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// Console line `line` (from 1) differs; `None`: that side has no such line.
    Console {
        /// Line number, from 1.
        line: usize,
        /// The recorded line.
        recorded: Option<String>,
        /// The replayed line.
        replayed: Option<String>,
    },
    /// Channel message `index` (from 1) differs.
    Message {
        /// Message number, from 1.
        index: usize,
        /// The recorded message (JSON).
        recorded: Option<String>,
        /// The replayed message (JSON).
        replayed: Option<String>,
    },
    /// A marked kernel function first ran at another instruction count
    /// (or ran in one and not the other), with console and messages alike.
    Mark {
        /// The recording's mark.
        recorded: Mark,
        /// The replay's.
        replayed: Mark,
    },
    /// The VM ended otherwise.
    End {
        /// How the recorded VM ended.
        recorded: String,
        /// How the replayed one did.
        replayed: String,
    },
}

/// The guest clock of a console line (`[   12.345678] …`), when it has one.
fn stamp(line: Option<&String>) -> String {
    line.and_then(|l| super::console_clock(l))
        .map(|secs| format!(" at guest time {secs:.6}s"))
        .unwrap_or_default()
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |s: &Option<String>| s.clone().unwrap_or_else(|| "(nothing)".into());
        match self {
            Divergence::Console {
                line,
                recorded,
                replayed,
            } => write!(
                f,
                "console line {line}{} differs:\n  recorded: {}\n  replayed: {}",
                stamp(recorded.as_ref().or(replayed.as_ref())),
                side(recorded),
                side(replayed)
            ),
            Divergence::Message {
                index,
                recorded,
                replayed,
            } => write!(
                f,
                "channel message {index} differs:\n  recorded: {}\n  replayed: {}",
                side(recorded),
                side(replayed)
            ),
            Divergence::Mark { recorded, replayed } => write!(
                f,
                "the same console and messages, but another instruction count:\n  recorded: \
                 {recorded}\n  replayed: {replayed}"
            ),
            Divergence::End { recorded, replayed } => {
                write!(
                    f,
                    "the VM ended otherwise: recorded {recorded}, replayed {replayed}"
                )
            }
        }
    }
}

/// What one replay did.
#[derive(Debug)]
pub struct Replayed {
    /// The recording's manifest.
    pub manifest: Manifest,
    /// Console lines of the replay.
    pub console_lines: usize,
    /// Channel messages of the replay.
    pub messages: usize,
    /// How the replayed VM ended.
    pub end: String,
    /// The kernel's scheduler-exit line in the replay.
    pub scheduler_exit: Option<String>,
    /// The recording's marks with the replay's counts (empty: the recording
    /// has none, or the replay went to gdb).
    pub marks: Vec<Mark>,
    /// The first difference from the recording; `None`: it repeated.
    pub divergence: Option<Divergence>,
    /// Wall seconds the replay's VM ran.
    pub wall_s: f64,
    /// What the gate plugin saw, when the replay ran through it
    /// ([`replay_asking`]): the answers, the stops, where gdb took over.
    pub gate: Option<GateEnd>,
}

impl Replayed {
    /// The instruction count where the replay was handed to gdb: from there
    /// on it is not compared with the recording ([`replay_with`]).
    pub fn gdb_at(&self) -> Option<u64> {
        self.gate.as_ref()?.held_at
    }
}

impl std::fmt::Display for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        match (&self.divergence, self.gdb_at()) {
            (_, Some(n)) => writeln!(
                f,
                "replay of {} ({}): handed to gdb after {n} guest instructions; what ran under \
                 gdb is not compared with the recording ({} console lines, end {})",
                m.test, m.run, self.console_lines, self.end
            )?,
            (None, None) => {
                writeln!(
                    f,
                    "replay of {} ({}): identical: console {} lines ({} bytes, SHA-256 {}), {} \
                     channel messages, end {}",
                    m.test,
                    m.run,
                    self.console_lines,
                    m.console.bytes,
                    &m.console.sha256[..16],
                    self.messages,
                    self.end
                )?;
                if let Some(x) = &self.scheduler_exit {
                    writeln!(
                        f,
                        "  scheduler exit, same line and guest clock: {}",
                        x.trim()
                    )?;
                }
                let mut counted = self.marks.iter().filter(|m| m.count.is_some()).peekable();
                if counted.peek().is_some() {
                    writeln!(
                        f,
                        "  same instruction counts (all vCPUs, before the function ran):"
                    )?;
                    for k in counted {
                        writeln!(f, "    {k}")?;
                    }
                } else if let Some(why) = &m.marks_missing {
                    writeln!(f, "  no instruction counts were recorded: {why}")?;
                } else if m.marks.is_empty() {
                    writeln!(
                        f,
                        "  no instruction counts were recorded: an older ktstr made the recording"
                    )?;
                }
            }
            (Some(d), None) => {
                writeln!(f, "replay of {} ({}): DIVERGED: {d}", m.test, m.run)?;
                let count = |c: Option<u64>| {
                    c.map_or("never ran".to_string(), |c| format!("at instruction {c}"))
                };
                for (a, b) in m.marks.iter().zip(&self.marks) {
                    writeln!(
                        f,
                        "  {} ({}): recorded {}, replayed {}",
                        a.what,
                        a.symbol,
                        count(a.count),
                        count(b.count)
                    )?;
                }
            }
        }
        if let Some(g) = &self.gate {
            writeln!(
                f,
                "  {} answers, {} stops of the machine to read it",
                g.answers.len(),
                g.stops
            )?;
            for m in &g.unreached {
                writeln!(f, "  {m}: the run ended before it")?;
            }
            if let Some(e) = g.failed.as_ref() {
                writeln!(f, "  the gate failed: {e}")?;
            }
            if let Some(e) = g.unreadable.as_ref() {
                writeln!(f, "  the guest could not be read: {e}")?;
            }
        }
        write!(
            f,
            "  recorded in {:.1}s, replayed in {:.1}s ({:.2}x)",
            m.wall_s,
            self.wall_s,
            self.wall_s / m.wall_s.max(1e-3)
        )
    }
}

/// The VM a manifest describes, with the recording's initramfs at `initrd`.
fn spec_of(m: &Manifest, initrd: &Path) -> Result<VmSpec, RecordingError> {
    let bad = |why: String| RecordingError::Manifest {
        path: initrd.with_file_name(super::MANIFEST),
        why,
    };
    let topology = m
        .topology
        .parse::<ktstr_topology::Topology>()
        .and_then(|t| t.with_memory_mib(m.memory_mib))
        .map_err(|e| bad(format!("topology {}: {e}", m.topology)))?;
    let mut spec = VmSpec::new(&m.kernel.path, topology);
    if spec.node_memory_bytes() != m.node_memory {
        return Err(bad(format!(
            "its nodes' memory {:?} is not what {} with {} MiB gives ({:?})",
            m.node_memory,
            m.topology,
            m.memory_mib,
            spec.node_memory_bytes()
        )));
    }
    spec.initrd = Some(initrd.to_path_buf());
    spec.cmdline = m.cmdline.clone();
    spec.reserved = m
        .reserved
        .iter()
        .map(|&(gpa, size)| ReservedRegion { gpa, size })
        .collect();
    spec.name = format!("ktstr-replay-{}", std::process::id());
    spec.tcg = ktstr_vmm::TcgMode::InstructionCount;
    spec.deterministic = Some(ktstr_vmm::Deterministic {
        seed: m.seed,
        rtc_base: m.rtc_base.clone(),
        gate: None,
    });
    Ok(spec)
}

/// Checks what the replay runs against what was recorded: QEMU, the kernel.
pub(super) fn check_inputs(
    m: &Manifest,
    backend: &dyn ktstr_vmm::Backend,
) -> Result<(), RecordingError> {
    let Some(program) = backend.program() else {
        return Err(RecordingError::Mismatch {
            what: "VM backend",
            recorded: m.qemu_id.clone(),
            here: backend.name(),
            fix: "replay with QEMU (KTSTR_BACKEND=qemu)",
        });
    };
    let qemu = super::write::digest_once(&program)?;
    if qemu.sha256 != m.qemu.sha256 {
        return Err(RecordingError::Mismatch {
            what: "QEMU binary",
            recorded: format!(
                "{} ({}, SHA-256 {})",
                m.qemu_id,
                m.qemu.path,
                &m.qemu.sha256[..16]
            ),
            here: format!(
                "{} ({}, SHA-256 {})",
                backend.snapshot_id().unwrap_or_else(|| backend.name()),
                qemu.path,
                &qemu.sha256[..16]
            ),
            fix: "replay where the recording's QEMU is (KTSTR_QEMU names it), or record the run again",
        });
    }
    let kernel = Path::new(&m.kernel.path);
    let here = if kernel.is_file() {
        super::write::digest_once(kernel)?.sha256
    } else {
        "nothing (the file is gone)".into()
    };
    if here != m.kernel.sha256 {
        return Err(RecordingError::Mismatch {
            what: "kernel",
            recorded: format!(
                "{} ({}, SHA-256 {})",
                m.kernel_release.as_deref().unwrap_or("release unknown"),
                m.kernel.path,
                &m.kernel.sha256[..16]
            ),
            here: format!(
                "{} with SHA-256 {}",
                m.kernel.path,
                &here[..here.len().min(16)]
            ),
            fix: "put the recorded kernel back (cargo ktstr kernel fetch RELEASE) or record again",
        });
    }
    Ok(())
}

/// The first index where `a` and `b` differ, with both sides there.
fn first_difference(a: &[String], b: &[String]) -> Option<(usize, Option<String>, Option<String>)> {
    let n = a.len().max(b.len());
    (0..n)
        .find(|&i| a.get(i) != b.get(i))
        .map(|i| (i + 1, a.get(i).cloned(), b.get(i).cloned()))
}

fn read_lines(path: &Path) -> Result<Vec<String>, RecordingError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordingError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Runs the recording in `dir` again and compares: the same console line
/// for line, the same channel messages, the same end. Refuses a recording
/// that is damaged or whose QEMU or kernel this host does not have.
pub fn replay(dir: &Path) -> Result<Replayed, RecordingError> {
    replay_asking(dir, &[])
}

/// The ktstr-qemu-gate plugin: `KTSTR_QEMU_GATE`, else beside the running
/// program in its cargo target directory (`target/<profile>/` or its
/// `deps/`, where cargo builds it as a dependency of ktstr).
pub fn gate_plugin() -> Result<PathBuf, RecordingError> {
    if let Some(p) = std::env::var_os("KTSTR_QEMU_GATE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(RecordingError::NoGate { looked: vec![p] })
        };
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let looked: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .flat_map(|d| [d.join(GATE_FILE), d.join("deps").join(GATE_FILE)])
        .collect();
    looked
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(RecordingError::NoGate { looked })
}

/// The plugin's file name as cargo builds it.
const GATE_FILE: &str = "libktstr_qemu_gate.so";

/// Like [`replay`], and reads the guest at each of `moments` with the
/// machine stopped there by the gate plugin ([`gate_plugin`]); the answers
/// are in [`Replayed::gate`]. The stops do not change the run: the
/// comparison with the recording still holds the replay to it.
pub fn replay_asking(dir: &Path, moments: &[Moment]) -> Result<Replayed, RecordingError> {
    replay_with(dir, moments, None)
}

/// Like [`replay_asking`], and with `gdb`, hands the replay to gdb at its
/// moment ([`GdbHold`]): the machine stays stopped there until gdb attaches
/// to the listener, then gdb drives it; the replay ends when gdb leaves.
/// What ran under gdb is not held to the recording ([`Replayed::gdb_at`]).
pub fn replay_with(
    dir: &Path,
    moments: &[Moment],
    gdb: Option<GdbHold>,
) -> Result<Replayed, RecordingError> {
    let manifest = super::load(dir)?;
    let initrd = check_own(dir, &manifest.initrd)?;
    let recorded_console = read_lines(&check_own(dir, &manifest.console)?)?;
    let recorded_messages = read_lines(&check_own(dir, &manifest.messages)?)?;
    let host = crate::config::HostConfig::global()?;
    let backend = host.backend()?;
    check_inputs(&manifest, backend.as_ref())?;
    let mut spec = spec_of(&manifest, &initrd)?;
    let mut moments = moments.to_vec();
    moments.extend(gdb.as_ref().map(|g| g.at));
    let gone = Arc::new(AtomicBool::new(false));
    let under_gdb = gdb.is_some();
    let questioned = !moments.is_empty();
    let marks: Vec<u64> = manifest.marks.iter().map(|m| m.address).collect();
    // Questions need the kernel placed; marks alone need nothing read.
    let plan = if moments.is_empty() {
        None
    } else if !manifest.cmdline.split_whitespace().any(|w| w == "nokaslr") {
        return Err(RecordingError::Randomized);
    } else {
        Some(GatePlan {
            vmlinux: PathBuf::from(&manifest.kernel.path),
            cache_root: host.cache_root.clone(),
            nr_cpus: spec.topology.nr_cpus(),
            moments,
        })
    };
    // One plugin load for both: it stops for the questions (if any) and
    // counts the marks (if the recording has them).
    let gated = if plan.is_none() && marks.is_empty() {
        None
    } else {
        let (socket, listener) = GateSocket::bind()?;
        let stub = gdb.as_ref().map(|_| GateSocket::bind_path("gdb"));
        if let Some(d) = spec.deterministic.as_mut() {
            d.gate = Some(ktstr_vmm::TcgGate {
                plugin: gate_plugin()?,
                socket: socket.0.clone(),
                first_stop: plan
                    .as_ref()
                    .map(|p| crate::monitor::first_stop(&p.moments)),
                marks,
                gdb: stub.as_ref().map(|s| s.0.clone()),
            });
        }
        let hold = match gdb.zip(stub.as_ref()) {
            Some((g, stub)) => {
                let vmlinux = Path::new(&manifest.kernel.path);
                let symbols = super::gdb::write_symbol_file(dir, vmlinux, &host.cache_root)?;
                Some(super::gdb::hold(
                    g,
                    stub.0.clone(),
                    symbols,
                    Arc::clone(&gone),
                ))
            }
            None => None,
        };
        Some(((socket, stub), listener, plan, hold))
    };
    let t0 = Instant::now();
    let mut vm = backend.boot(&spec)?;
    let quit = Arc::new(AtomicBool::new(false));
    let gate = gated.map(|(socket, listener, plan, hold)| {
        let (mem, quit) = (vm.memory().clone(), Arc::clone(&quit));
        let thread =
            std::thread::Builder::new()
                .name("ktstr-gate".into())
                .spawn(move || match plan {
                    Some(plan) => crate::monitor::serve_gate(&plan, hold, &listener, &mem, &quit),
                    None => crate::monitor::collect_marks(&listener, &quit),
                });
        (socket, thread)
    });
    let console = vm.take_console();
    let mut reader = Reader::watching(HostChannel {
        mem: vm.memory().clone(),
        base: channel::CHANNEL_GPA,
    });
    // The recorded run's time and then some: a replay on a slower or busier
    // host takes longer in wall time, never in guest time.
    let deadline = t0 + Duration::from_secs_f64(manifest.wall_s * 4.0 + 120.0);
    let (mut lines, mut messages) = (Vec::new(), Vec::new());
    let poll = |reader: &mut Reader<HostChannel>, messages: &mut Vec<String>| match reader.poll() {
        Ok(msgs) => messages.extend(
            msgs.iter()
                .map(|m| serde_json::to_string(m).unwrap_or_default()),
        ),
        Err(ChannelError::NotInitialized) => {}
        Err(e) => messages.push(format!("(channel fault: {e})")),
    };
    let end = loop {
        if let Some(c) = &console {
            while let ConsoleEvent::Line(l) = c.recv(Duration::ZERO) {
                lines.push(l);
            }
        }
        poll(&mut reader, &mut messages);
        if let Some(end) = vm.try_wait()? {
            break end;
        }
        if gone.load(Ordering::Relaxed) {
            // gdb left (or never came): the run is gdb's, not the recording's.
            vm.kill();
            break EndReason::Killed;
        }
        // Under gdb a person takes their time: no deadline.
        if !under_gdb && Instant::now() >= deadline {
            vm.kill();
            break EndReason::Timeout;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    quit.store(true, Ordering::Relaxed);
    let gate = gate.map(|(socket, thread)| {
        let end = match thread {
            Ok(t) => t.join().unwrap_or_else(|_| GateEnd {
                failed: Some("the gate's thread panicked".into()),
                ..GateEnd::default()
            }),
            Err(e) => GateEnd {
                failed: Some(format!("starting the gate's thread: {e}")),
                ..GateEnd::default()
            },
        };
        drop(socket);
        end
    });
    poll(&mut reader, &mut messages);
    if let Some(c) = &console {
        while let Some(l) = c.next_line(Duration::from_millis(50)) {
            lines.push(l);
        }
    }
    drop(vm);
    let wall_s = t0.elapsed().as_secs_f64();
    let write = |name: &str, l: &[String]| {
        let path = dir.join(name);
        std::fs::write(&path, lines_bytes(l))
            .map_err(|source| RecordingError::File { path, source })
    };
    write(REPLAY_CONSOLE, &lines)?;
    write(REPLAY_MESSAGES, &messages)?;
    let end = end_name(&end);
    // A plugin that failed leaves counts missing that the run did reach:
    // no verdict on them.
    if let Some(why) = gate
        .as_ref()
        .filter(|_| !manifest.marks.is_empty() && !under_gdb)
        .and_then(|g| g.failed.clone())
    {
        return Err(RecordingError::Uncounted { why });
    }
    // The replay's counts; none after gdb took over (it is not compared).
    let (marks, gate) = match gate {
        Some(g) if !questioned => (g.marks, None),
        Some(g) => (g.marks.clone(), Some(g)),
        None => (Vec::new(), None),
    };
    let marks = if under_gdb || manifest.marks.is_empty() {
        Vec::new()
    } else {
        super::marks::counted(&manifest.marks, &marks)
    };
    let divergence = first_difference(&recorded_console, &lines)
        .map(|(line, recorded, replayed)| Divergence::Console {
            line,
            recorded,
            replayed,
        })
        .or_else(|| {
            first_difference(&recorded_messages, &messages).map(|(index, recorded, replayed)| {
                Divergence::Message {
                    index,
                    recorded,
                    replayed,
                }
            })
        })
        .or_else(|| {
            (end != manifest.end).then(|| Divergence::End {
                recorded: manifest.end.clone(),
                replayed: end.clone(),
            })
        })
        .or_else(|| {
            super::marks::first_difference(&manifest.marks, &marks)
                .map(|(recorded, replayed)| Divergence::Mark { recorded, replayed })
        });
    Ok(Replayed {
        console_lines: lines.len(),
        messages: messages.len(),
        scheduler_exit: super::scheduler_exit(&lines),
        marks,
        end,
        divergence,
        wall_s,
        manifest,
        gate,
    })
}
