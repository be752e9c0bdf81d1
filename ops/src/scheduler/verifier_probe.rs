//! The verifier's states and peak states of each program a scheduler loads.
//!
//! `bpf_prog_info` has the instructions processed but not the states, which only a
//! `BPF_LOG_STATS` verifier log prints, and only the scheduler's own loader can ask for
//! one. So the guest reads them where the kernel keeps them: `bpf_check()` ends by calling
//! `bpf_vlog_finalize(&env->log, ...)` for every program, whatever the log level, with the
//! figures final in `env`. A kprobe there fetches them relative to its first argument, at
//! offsets the host takes from the kernel's BTF ([`VerifierOffsets`]). It records into a
//! tracefs instance of its own, so it neither sees nor disturbs the auto-repro probes.
//!
//! The same function finalizes BTF loads' logs, whose `log` sits in another structure:
//! those records read garbage. Records count only where their name is a program's the
//! scheduler holds, and the last such record before the attach is the one that loaded it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where the figures are, from the kernel's BTF: byte offsets in `struct
/// bpf_verifier_env` relative to its `log` member (what the probed function receives),
/// and the path from there to the program's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierOffsets {
    /// `env->insn_processed - &env->log`.
    pub insn_processed: i64,
    /// `env->total_states - &env->log`.
    pub total_states: i64,
    /// `env->peak_states - &env->log`.
    pub peak_states: i64,
    /// `env->verification_time - &env->log` (ns, u64).
    pub verification_time: i64,
    /// `env->prog - &env->log`.
    pub prog: i64,
    /// `offsetof(struct bpf_prog, aux)`.
    pub prog_aux: u32,
    /// `offsetof(struct bpf_prog_aux, name)`.
    pub aux_name: u32,
}

/// What the verifier counted for one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VerifierRecord {
    /// The program's name (at most 15 bytes).
    pub name: String,
    /// Instructions processed.
    pub insns: u32,
    /// States the verifier explored (`total_states`).
    pub states: u32,
    /// Most states kept at once (`peak_states`).
    pub peak_states: u32,
    /// `bpf_check()`'s own duration, ns.
    pub verification_ns: u64,
}

const TRACEFS: &str = "/sys/kernel/tracing";
const INSTANCE: &str = "instances/ktstr_verifier";
const GROUP: &str = "ktstr_verifier";
const EVENT: &str = "stats";
/// The probed function: `int bpf_vlog_finalize(struct bpf_verifier_log *log, u32 *)`
/// (kernel/bpf/log.c, Linux 6.4+).
const FUNCTION: &str = "bpf_vlog_finalize";

/// `+OFF(ARG)` with the sign tracefs wants (`-8($arg1)`, `+16($arg1)`).
fn at(off: i64, arg: &str) -> String {
    if off < 0 {
        format!("{off}({arg})")
    } else {
        format!("+{off}({arg})")
    }
}

impl VerifierOffsets {
    /// The kprobe's definition (a line of `dynamic_events`).
    pub(crate) fn kprobe(&self) -> String {
        let prog = at(self.prog, "$arg1");
        let aux = at(i64::from(self.prog_aux), &prog);
        let name = at(i64::from(self.aux_name), &aux);
        format!(
            "p:{GROUP}/{EVENT} {FUNCTION} insns={}:u32 states={}:u32 peak={}:u32 ns={}:u64 name={name}:string",
            at(self.insn_processed, "$arg1"),
            at(self.total_states, "$arg1"),
            at(self.peak_states, "$arg1"),
            at(self.verification_time, "$arg1"),
        )
    }
}

/// Why the verifier's kprobe could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum VerifierProbeError {
    /// The kernel has no kprobe events.
    #[error(
        "no {TRACEFS}/dynamic_events: the kernel lacks tracefs or kprobe events \
         (CONFIG_KPROBE_EVENTS)"
    )]
    NoKprobeEvents,
    /// The tracing instance could not be created.
    #[error("creating {}: {source}", path.display())]
    Instance {
        /// Its directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel refused the kprobe's definition.
    #[error("defining the kprobe {definition:?}: {source}")]
    Define {
        /// The definition written to `dynamic_events`.
        definition: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tracefs file could not be written.
    #[error("{TRACEFS}/{file}: {source}")]
    Write {
        /// The file, relative to tracefs.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The probe, installed.
#[derive(Debug)]
pub(crate) struct VerifierProbe {
    _priv: (),
}

fn tracefs(path: &str) -> std::path::PathBuf {
    Path::new(TRACEFS).join(path)
}

fn write(path: &str, text: &str) -> Result<(), VerifierProbeError> {
    std::fs::write(tracefs(path), text).map_err(|source| VerifierProbeError::Write {
        file: path.to_string(),
        source,
    })
}

impl VerifierProbe {
    /// Defines the kprobe (once per boot: a second call finds it defined) and starts
    /// recording into a fresh buffer.
    pub(crate) fn install(offsets: &VerifierOffsets) -> Result<VerifierProbe, VerifierProbeError> {
        mount_tracefs()?;
        let instance = tracefs(INSTANCE);
        if !instance.exists() {
            std::fs::create_dir(&instance).map_err(|source| VerifierProbeError::Instance {
                path: instance.clone(),
                source,
            })?;
        }
        let enable = format!("{INSTANCE}/events/{GROUP}/{EVENT}/enable");
        if !tracefs(&enable).exists() {
            use std::io::Write;
            let def = offsets.kprobe();
            std::fs::OpenOptions::new()
                .append(true)
                .open(tracefs("dynamic_events"))
                .and_then(|mut f| f.write_all(format!("{def}\n").as_bytes()))
                .map_err(|source| VerifierProbeError::Define {
                    definition: def,
                    source,
                })?;
        }
        // Truncate: only this scheduler's loads.
        write(&format!("{INSTANCE}/trace"), "")?;
        // Enabled once per boot and left on: arming or disarming a kprobe takes ~40 ms of
        // a TCG guest (measured on 7.3.4), and the probe fires only on BPF loads.
        if std::fs::read_to_string(tracefs(&enable)).is_ok_and(|t| t.trim() != "1") {
            write(&enable, "1")?;
        }
        Ok(VerifierProbe { _priv: () })
    }

    /// Reads what was recorded since [`VerifierProbe::install`], oldest first.
    pub(crate) fn finish(self) -> Vec<VerifierRecord> {
        // Bytes, not a string: a BTF load's record reads its "name" through a pointer that
        // is not one, and when that reads at all it yields arbitrary bytes.
        std::fs::read(tracefs(&format!("{INSTANCE}/trace")))
            .map(|t| records_of(&t))
            .unwrap_or_default()
    }
}

/// The records of a trace's bytes (which need not be UTF-8).
fn records_of(trace: &[u8]) -> Vec<VerifierRecord> {
    String::from_utf8_lossy(trace)
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// One trace line: `... stats: (bpf_vlog_finalize+0x4/0xd0) insns=85 states=6 peak=6
/// ns=7221959 name="ktstr_select_cp"`. A record whose name could not be read
/// (`name=(fault)`: a BTF load's log) is none.
fn parse_line(line: &str) -> Option<VerifierRecord> {
    if line.starts_with('#') {
        return None;
    }
    let field = |key: &str| {
        let start = line.find(&format!(" {key}="))? + key.len() + 2;
        let rest = &line[start..];
        Some(&rest[..rest.find(' ').unwrap_or(rest.len())])
    };
    let name_at = line.find(" name=\"")? + 7;
    let name = &line[name_at..];
    let name = &name[..name.rfind('"')?];
    Some(VerifierRecord {
        name: name.to_string(),
        insns: field("insns")?.parse().ok()?,
        states: field("states")?.parse().ok()?,
        peak_states: field("peak")?.parse().ok()?,
        verification_ns: field("ns")?.parse().ok()?,
    })
}

/// The last record of the program `name` (the load the scheduler kept).
pub(super) fn last_by_name<'a>(
    records: &'a [VerifierRecord],
    name: &str,
) -> Option<&'a VerifierRecord> {
    records
        .iter()
        .rev()
        .find(|r| !r.name.is_empty() && r.name == name)
}

/// tracefs, mounted by the guest's init (again here, at no cost, if it is not).
fn mount_tracefs() -> Result<(), VerifierProbeError> {
    crate::runtime::system::mount("tracefs", TRACEFS, "tracefs");
    if tracefs("dynamic_events").exists() {
        Ok(())
    } else {
        Err(VerifierProbeError::NoKprobeEvents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of Debian's 7.3.4 (`struct bpf_verifier_env`: `log` at 2184).
    const OFF_7_3: VerifierOffsets = VerifierOffsets {
        insn_processed: 52228 - 2184,
        total_states: 52260 - 2184,
        peak_states: 52264 - 2184,
        verification_time: 52248 - 2184,
        prog: 8 - 2184,
        prog_aux: 80,
        aux_name: 1008,
    };

    #[test]
    fn the_kprobe_fetches_each_figure_relative_to_the_log() {
        assert_eq!(
            OFF_7_3.kprobe(),
            "p:ktstr_verifier/stats bpf_vlog_finalize insns=+50044($arg1):u32 \
             states=+50076($arg1):u32 peak=+50080($arg1):u32 ns=+50064($arg1):u64 \
             name=+1008(+80(-2176($arg1))):string"
        );
    }

    #[test]
    fn trace_lines_become_records_and_btf_loads_do_not() {
        let lines = [
            "# tracer: nop",
            r#"       scx-ktstr-112     [001] .....    15.066272: stats: (bpf_vlog_finalize+0x4/0xd0) insns=0 states=0 peak=0 ns=0 name=(fault)"#,
            r#"       scx-ktstr-112     [001] .....    15.317835: stats: (bpf_vlog_finalize+0x4/0xd0) insns=85 states=6 peak=6 ns=7221959 name="ktstr_select_cp""#,
            r#"       scx-ktstr-112     [001] .....    15.334833: stats: (bpf_vlog_finalize+0x4/0xd0) insns=219 states=17 peak=12 ns=16606912 name="ktstr_enqueue""#,
            "garbage",
        ];
        let records: Vec<_> = lines.iter().filter_map(|l| parse_line(l)).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[1],
            VerifierRecord {
                name: "ktstr_enqueue".into(),
                insns: 219,
                states: 17,
                peak_states: 12,
                verification_ns: 16_606_912,
            }
        );
        assert_eq!(
            last_by_name(&records, "ktstr_select_cp").map(|r| r.insns),
            Some(85)
        );
        assert!(last_by_name(&records, "other").is_none());
        // A BTF load's garbage name, bytes that are not UTF-8, spoils no other record.
        let mut trace = lines.join("\n").into_bytes();
        trace.extend_from_slice(
            b"\n x: stats: (f) insns=1 states=2 peak=3 ns=4 name=\"\xff\xfe\x01\"\n",
        );
        let records = records_of(&trace);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].name, "ktstr_enqueue");
    }
}
