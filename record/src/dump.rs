//! The failure dump in the record: the scheduler's own state (globals decoded by its BTF,
//! maps bounded with their counts, DSQs with the tasks queued), read from guest memory with
//! the VM paused, when a test failed or asked for it. Its [`Display`](std::fmt::Display) is
//! the text printed under the verdict.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The scheduler's state at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerDump {
    /// What made ktstr read it (`the scheduler died`, `the verdict failed`, `requested`,
    /// `the watchdog`).
    pub reason: String,
    /// When, seconds from the VM's boot.
    pub t: f64,
    /// The attached sched_ext scheduler (`None`: none was attached any more).
    pub scheduler: Option<String>,
    /// Why the scheduler could not be read.
    #[serde(default)]
    pub scheduler_error: Option<String>,
    /// The programs' data sections.
    #[serde(default)]
    pub sections: Vec<DumpSection>,
    /// The other maps.
    #[serde(default)]
    pub maps: Vec<DumpMap>,
    /// Whole-dump notes (maps that could not be listed, maps left out).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The scheduler's DSQs and the CPUs' non-empty local DSQs.
    #[serde(default)]
    pub dsqs: Vec<DumpDsq>,
    /// Why the DSQs could not be read.
    #[serde(default)]
    pub dsqs_error: Option<String>,
    /// Host time the read took, ms.
    pub read_ms: f64,
}

/// A data section (`.bss`, `.data`, `.rodata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpSection {
    /// The map holding it (`ktstr.bss`).
    pub map: String,
    /// The map's id.
    pub map_id: u32,
    /// The section's name.
    pub section: String,
    /// The variables.
    #[serde(default)]
    pub vars: Vec<DumpVar>,
    /// Why the variables could not be read.
    #[serde(default)]
    pub error: Option<String>,
}

/// A global variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpVar {
    /// Its name.
    pub name: String,
    /// Its C type.
    pub type_name: String,
    /// Its value as decoded.
    pub value: String,
    /// The value as an integer (1- to 8-byte integers).
    #[serde(default)]
    pub int: Option<u64>,
}

/// A map, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpMap {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// Its type (`hash`, `percpu_array`).
    pub kind: String,
    /// Key size, bytes.
    pub key_size: u32,
    /// Value size, bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Entries in use (`None`: not counted).
    pub total: Option<u64>,
    /// The first entries.
    #[serde(default)]
    pub entries: Vec<DumpEntry>,
    /// Entries counted but not shown.
    #[serde(default)]
    pub left_out: u64,
    /// Why contents are missing or incomplete.
    #[serde(default)]
    pub note: Option<String>,
}

/// One entry of a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpEntry {
    /// The key as decoded.
    pub key: String,
    /// The CPU, for a per-CPU map.
    #[serde(default)]
    pub cpu: Option<u32>,
    /// The value as decoded.
    pub value: String,
}

/// A DSQ and its first queued tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpDsq {
    /// `0x10`, or `local cpu3`.
    pub name: String,
    /// Tasks queued.
    pub nr: u32,
    /// The first queued tasks: pid and comm.
    #[serde(default)]
    pub tasks: Vec<(i32, String)>,
    /// Why the list is missing or short.
    #[serde(default)]
    pub note: Option<String>,
}

impl SchedulerDump {
    /// The global `name` (from the newest map declaring it).
    pub fn var(&self, name: &str) -> Option<&DumpVar> {
        self.sections
            .iter()
            .rev()
            .flat_map(|s| s.vars.iter())
            .find(|v| v.name == name)
    }

    /// The map `name`.
    pub fn map(&self, name: &str) -> Option<&DumpMap> {
        self.maps.iter().find(|m| m.name == name)
    }
}

impl fmt::Display for SchedulerDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scheduler dump ({}, at {:.3}s, read in {:.1} ms): ",
            self.reason, self.t, self.read_ms
        )?;
        match (&self.scheduler, &self.scheduler_error) {
            (_, Some(e)) => writeln!(f, "scheduler unreadable: {e}")?,
            (Some(n), None) => writeln!(f, "{n} attached")?,
            (None, None) => writeln!(
                f,
                "no scheduler attached any more (its DSQs went with it; its maps were kept)"
            )?,
        }
        for s in &self.sections {
            writeln!(f, "  {} (map {}, id {}):", s.section, s.map, s.map_id)?;
            if let Some(e) = &s.error {
                writeln!(f, "    {e}")?;
            }
            for v in &s.vars {
                writeln!(f, "    {} {} = {}", v.type_name, v.name, v.value)?;
            }
        }
        for m in &self.maps {
            let total = m.total.map_or_else(|| "?".into(), |t| t.to_string());
            writeln!(
                f,
                "  map {} (id {}, {}, {total} of {} entries):",
                m.name, m.id, m.kind, m.max_entries
            )?;
            for e in &m.entries {
                match e.cpu {
                    Some(c) => writeln!(f, "    [{}] cpu{c}: {}", e.key, e.value)?,
                    None => writeln!(f, "    [{}] {}", e.key, e.value)?,
                }
            }
            if m.left_out > 0 {
                writeln!(f, "    ... {} more entries left out", m.left_out)?;
            }
            if let Some(n) = &m.note {
                writeln!(f, "    ({n})")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        if let Some(e) = &self.dsqs_error {
            write!(f, "  DSQs: {e}")?;
        } else if self.dsqs.is_empty() {
            write!(f, "  DSQs: none")?;
        } else {
            let lines: Vec<String> = self
                .dsqs
                .iter()
                .map(|q| {
                    let mut l = format!("  DSQ {} nr={}", q.name, q.nr);
                    if !q.tasks.is_empty() {
                        let t: Vec<String> =
                            q.tasks.iter().map(|(p, c)| format!("{p}:{c}")).collect();
                        l.push_str(&format!(" [{}]", t.join(" ")));
                    }
                    if let Some(n) = &q.note {
                        l.push_str(&format!(" ({n})"));
                    }
                    l
                })
                .collect();
            write!(f, "{}", lines.join("\n"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SchedulerDump {
        SchedulerDump {
            reason: "the scheduler died".into(),
            t: 4.5,
            scheduler: None,
            scheduler_error: None,
            sections: vec![DumpSection {
                map: "ktstr.bss".into(),
                map_id: 7,
                section: ".bss".into(),
                vars: vec![DumpVar {
                    name: "nr_dispatched".into(),
                    type_name: "u64".into(),
                    value: "40".into(),
                    int: Some(40),
                }],
                error: None,
            }],
            maps: vec![DumpMap {
                name: "task_ctx".into(),
                id: 9,
                kind: "hash".into(),
                key_size: 4,
                value_size: 16,
                max_entries: 64,
                total: Some(3),
                entries: vec![DumpEntry {
                    key: "101".into(),
                    cpu: None,
                    value: "{pid=101}".into(),
                }],
                left_out: 2,
                note: None,
            }],
            notes: vec![],
            dsqs: vec![DumpDsq {
                name: "0x10".into(),
                nr: 5,
                tasks: vec![(301, "stress-0".into())],
                note: Some("4 more not shown".into()),
            }],
            dsqs_error: None,
            read_ms: 1.25,
        }
    }

    #[test]
    fn the_printed_dump_names_globals_entries_and_what_was_left_out() {
        let text = sample().to_string();
        for needle in [
            "scheduler dump (the scheduler died, at 4.500s, read in 1.2 ms)",
            "no scheduler attached any more",
            ".bss (map ktstr.bss, id 7):",
            "u64 nr_dispatched = 40",
            "map task_ctx (id 9, hash, 3 of 64 entries):",
            "[101] {pid=101}",
            "... 2 more entries left out",
            "DSQ 0x10 nr=5 [301:stress-0] (4 more not shown)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
        }
        assert_eq!(sample().var("nr_dispatched").and_then(|v| v.int), Some(40));
        assert_eq!(sample().map("task_ctx").map(|m| m.left_out), Some(2));
    }

    #[test]
    fn a_dump_round_trips_and_reads_without_its_optional_parts() {
        let d = sample();
        let back: SchedulerDump =
            serde_json::from_str(&serde_json::to_string(&d).expect("serializes")).expect("reads");
        assert_eq!(back, d);
        let minimal: SchedulerDump =
            serde_json::from_str(r#"{"reason":"requested","t":1.0,"scheduler":"x","read_ms":0.5}"#)
                .expect("optional parts default");
        assert!(minimal.maps.is_empty() && minimal.dsqs_error.is_none());
    }
}
