//! The failure dump and the verifier's figures on their way from the VM to the record:
//! what `ktstr-guest-mem` read (and the guest reported) as the record's typed values.
//!
//! The dump is read when the guest asks for it after a failed (or `dump = true`) body —
//! the request's name says why ([`request_reason`]) — or when the watchdog is about to
//! kill a hung VM; [`crate::monitor`] pauses the VM for it.

use std::time::Duration;

use ktstr_guest_mem::SchedulerDump as Read;
use ktstr_record::{DumpDsq, DumpEntry, DumpMap, DumpSection, DumpVar, ProgStats, SchedulerDump};

/// What reads the dump: limits of a failure dump (16 entries per map, 64 maps).
pub(crate) fn limits() -> ktstr_guest_mem::DumpLimits {
    ktstr_guest_mem::DumpLimits::default()
}

/// Why the guest asked for the dump (its request is `ktstr:dump` or `ktstr:dump:<why>`);
/// `None` for any other snapshot.
pub(crate) fn request_reason(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ktstr_ops::DUMP_SNAPSHOT)?;
    Some(match rest.strip_prefix(':') {
        Some(why) if !why.is_empty() => why.to_string(),
        _ => "requested".to_string(),
    })
}

/// The record's form of a dump read `t` after boot.
pub(crate) fn to_record(d: &Read, reason: &str, t: Duration) -> SchedulerDump {
    let (scheduler, scheduler_error) = match &d.scheduler {
        Ok(s) => (s.clone(), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut notes = Vec::new();
    if let Some(e) = &d.maps_error {
        notes.push(e.clone());
    }
    if d.maps_left_out > 0 {
        notes.push(format!("{} more maps not read", d.maps_left_out));
    }
    let (dsqs, dsqs_error) = match &d.dsqs {
        Ok(q) => (
            q.iter()
                .map(|q| DumpDsq {
                    name: q.name.clone(),
                    nr: q.nr,
                    tasks: q.tasks.clone(),
                    note: q.note.clone(),
                })
                .collect(),
            None,
        ),
        Err(e) if scheduler.is_none() && scheduler_error.is_none() => (
            Vec::new(),
            Some(format!("none (no scheduler attached: {e})")),
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    SchedulerDump {
        reason: reason.to_string(),
        t: t.as_secs_f64(),
        scheduler,
        scheduler_error,
        sections: d
            .sections
            .iter()
            .map(|s| {
                let (vars, error) = match &s.vars {
                    Ok(v) => (
                        v.iter()
                            .map(|v| DumpVar {
                                name: v.name.clone(),
                                type_name: v.type_name.clone(),
                                value: v.value.clone(),
                                int: v.int,
                            })
                            .collect(),
                        None,
                    ),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                DumpSection {
                    map: s.map.clone(),
                    map_id: s.map_id,
                    section: s.section.clone(),
                    vars,
                    error,
                }
            })
            .collect(),
        maps: d
            .maps
            .iter()
            .map(|m| DumpMap {
                name: m.name.clone(),
                id: m.id,
                kind: m.kind.clone(),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                total: m.total,
                entries: m
                    .entries
                    .iter()
                    .map(|e| DumpEntry {
                        key: e.key.clone(),
                        cpu: e.cpu,
                        value: e.value.clone(),
                    })
                    .collect(),
                left_out: m.left_out(),
                note: m.note.clone(),
            })
            .collect(),
        notes,
        dsqs,
        dsqs_error,
        read_ms: d.read_time.as_secs_f64() * 1e3,
    }
}

/// A dump that could not be read at all (the monitor never placed the kernel, the VM
/// would not pause): the reason, as a dump.
pub(crate) fn unreadable(reason: &str, t: Duration, why: &str) -> SchedulerDump {
    SchedulerDump {
        reason: reason.to_string(),
        t: t.as_secs_f64(),
        scheduler: None,
        scheduler_error: Some(why.to_string()),
        sections: Vec::new(),
        maps: Vec::new(),
        notes: Vec::new(),
        dsqs: Vec::new(),
        dsqs_error: None,
        read_ms: 0.0,
    }
}

/// The guest's report of its scheduler's programs, as the record's figures.
pub(crate) fn prog_stats(infos: &[ktstr_ops::ProgInfo]) -> Vec<ProgStats> {
    let mut out: Vec<ProgStats> = infos
        .iter()
        .map(|p| ProgStats {
            name: p.name.clone(),
            prog_type: p.prog_type,
            verified_insns: u64::from(p.verified_insns),
            xlated_insns: u64::from(p.xlated_insns),
            jited_bytes: u64::from(p.jited_bytes),
            states: p.states.map(u64::from),
            peak_states: p.peak_states.map(u64::from),
            verify_ms: p.verification_ns.map(|ns| ns as f64 / 1e6),
            load_ms: None,
        })
        .collect();
    // A program's load time: from its load to the next one's (libbpf loads them one after
    // another, the verifier between); the last one's is unknown.
    let mut by_time: Vec<(u64, usize)> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (p.load_time_ns, i))
        .collect();
    by_time.sort();
    for w in by_time.windows(2) {
        if let [(t0, i), (t1, _)] = w
            && let Some(s) = out.get_mut(*i)
        {
            s.load_ms = Some(t1.saturating_sub(*t0) as f64 / 1e6);
        }
    }
    out
}

/// The programs' figures as printed after a test that asked for its dump.
pub(crate) fn progs_text(test: &str, progs: &[ProgStats]) -> String {
    let mut out = format!(
        "{test}: BPF programs ({}):\n",
        ProgStats::COLUMNS.join(" / ")
    );
    for p in progs {
        out.push_str(&format!("  {:<16} {}\n", p.name, p.cells().join(" / ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_request_names_its_reason() {
        assert_eq!(request_reason("ktstr:dump").as_deref(), Some("requested"));
        assert_eq!(
            request_reason("ktstr:dump:the scheduler died").as_deref(),
            Some("the scheduler died")
        );
        assert_eq!(request_reason("after-ramp"), None);
    }

    #[test]
    fn the_crafted_guest_s_dump_keeps_its_parts_in_the_record() {
        let g = ktstr_guest_mem::testkit::Guest::new();
        let read = g.kernel().scheduler_dump(&limits());
        let d = to_record(&read, "the verdict failed", Duration::from_millis(4200));
        assert_eq!(d.scheduler.as_deref(), Some("ktstr_fifo"));
        assert_eq!(d.var("nr_dispatched").and_then(|v| v.int), Some(40));
        let m = d.map("task_ctx").expect("the hash map");
        assert_eq!(
            (m.total, m.left_out, m.entries[0].key.as_str()),
            (Some(2), 0, "101")
        );
        let text = d.to_string();
        assert!(
            text.contains("DSQ 0x10 nr=5 [301:stress-0 302:stress-1] (3 more not shown)"),
            "{text}"
        );
    }

    #[test]
    fn program_reports_become_figures_with_load_times_between_loads() {
        let report = serde_json::json!([
            {"id": 5, "name": "b", "prog_type": 27, "verified_insns": 50, "xlated_insns": 40,
             "jited_bytes": 300, "load_time_ns": 3_000_000},
            {"id": 4, "name": "a", "prog_type": 27, "verified_insns": 900, "xlated_insns": 80,
             "jited_bytes": 600, "load_time_ns": 1_000_000, "states": 70, "peak_states": 30,
             "verification_ns": 1_250_000},
        ]);
        let infos: Vec<ktstr_ops::ProgInfo> =
            serde_json::from_value(report).expect("the guest's form");
        let s = prog_stats(&infos);
        assert_eq!((s[1].name.as_str(), s[1].verified_insns), ("a", 900));
        assert_eq!(s[1].load_ms, Some(2.0));
        assert_eq!(s[0].load_ms, None);
        assert_eq!((s[0].states, s[0].verify_ms), (None, None));
        assert_eq!((s[1].states, s[1].peak_states), (Some(70), Some(30)));
        let text = progs_text("t::x", &s);
        assert!(
            text.contains("a                900 / 70 / 30 / 80 / 600 / 1.2 / 2.0"),
            "{text}"
        );
    }
}
