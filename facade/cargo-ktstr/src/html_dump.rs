//! The HTML of a record's failure dump (one collapsible section per data section and per
//! map) and of its BPF programs' verifier figures.

use std::fmt::Write;

use ktstr_record::{RunRecord, SchedulerDump};

use crate::report::xml_escape;

/// The dump and the verifier figures of `r`, or nothing when it has neither.
pub fn sections(r: &RunRecord) -> String {
    let mut h = String::new();
    if let Some(d) = &r.dump {
        h.push_str(&dump(d));
    }
    if !r.bpf_progs.is_empty() {
        h.push_str(
            "<details><summary>BPF programs: the verifier's cost</summary>\n<table><tr>\
             <th>program</th>",
        );
        for c in ktstr_record::ProgStats::COLUMNS {
            let _ = write!(h, "<th>{c}</th>");
        }
        h.push_str("</tr>\n");
        for p in &r.bpf_progs {
            let _ = write!(h, "<tr><td>{}</td>", xml_escape(&p.name));
            for c in p.cells() {
                let _ = write!(h, "<td>{c}</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table></details>\n");
    }
    h
}

fn dump(d: &SchedulerDump) -> String {
    let mut h = String::new();
    let who = match (&d.scheduler, &d.scheduler_error) {
        (_, Some(e)) => format!("scheduler unreadable: {e}"),
        (Some(n), None) => format!("{n} attached"),
        (None, None) => "no scheduler attached any more (maps kept)".into(),
    };
    let _ = writeln!(
        h,
        "<h3>Scheduler dump ({}, at {:.3} s, read in {:.1} ms): {}</h3>",
        xml_escape(&d.reason),
        d.t,
        d.read_ms,
        xml_escape(&who)
    );
    for s in &d.sections {
        let _ = writeln!(
            h,
            "<details open><summary>{} (map {}, id {}): {} variables</summary><pre>",
            xml_escape(&s.section),
            xml_escape(&s.map),
            s.map_id,
            s.vars.len()
        );
        if let Some(e) = &s.error {
            let _ = writeln!(h, "{}", xml_escape(e));
        }
        for v in &s.vars {
            let _ = writeln!(
                h,
                "{} {} = {}",
                xml_escape(&v.type_name),
                xml_escape(&v.name),
                xml_escape(&v.value)
            );
        }
        h.push_str("</pre></details>\n");
    }
    for m in &d.maps {
        let total = m.total.map_or_else(|| "?".into(), |t| t.to_string());
        let _ = writeln!(
            h,
            "<details><summary>map {} (id {}, {}): {total} of {} entries</summary><pre>",
            xml_escape(&m.name),
            m.id,
            xml_escape(&m.kind),
            m.max_entries
        );
        for e in &m.entries {
            let cpu = e.cpu.map(|c| format!(" cpu{c}:")).unwrap_or_default();
            let _ = writeln!(h, "[{}]{cpu} {}", xml_escape(&e.key), xml_escape(&e.value));
        }
        if m.left_out > 0 {
            let _ = writeln!(h, "... {} more entries left out", m.left_out);
        }
        if let Some(n) = &m.note {
            let _ = writeln!(h, "({})", xml_escape(n));
        }
        h.push_str("</pre></details>\n");
    }
    let dsqs: Vec<String> = d
        .dsqs
        .iter()
        .map(|q| {
            let tasks: Vec<String> = q.tasks.iter().map(|(p, c)| format!("{p}:{c}")).collect();
            format!("DSQ {} nr={} [{}]", q.name, q.nr, tasks.join(" "))
        })
        .collect();
    let _ = writeln!(
        h,
        "<details><summary>DSQs</summary><pre>{}{}</pre></details>",
        xml_escape(&dsqs.join("\n")),
        xml_escape(d.dsqs_error.as_deref().unwrap_or(""))
    );
    for n in &d.notes {
        let _ = writeln!(h, "<p>{}</p>", xml_escape(n));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_record::{DumpEntry, DumpMap, Verdict};

    #[test]
    fn each_map_is_a_collapsible_section_with_its_entries() {
        let mut r = RunRecord::new("t::x", Verdict::Fail);
        r.dump = Some(SchedulerDump {
            reason: "the scheduler died".into(),
            t: 3.0,
            scheduler: None,
            scheduler_error: None,
            sections: vec![],
            maps: vec![DumpMap {
                name: "ktstr_tasks".into(),
                id: 2,
                kind: "hash".into(),
                key_size: 4,
                value_size: 16,
                max_entries: 4096,
                total: Some(20),
                entries: vec![DumpEntry {
                    key: "54".into(),
                    cpu: None,
                    value: "{enqueues=42}".into(),
                }],
                left_out: 19,
                note: None,
            }],
            notes: vec![],
            dsqs: vec![],
            dsqs_error: None,
            read_ms: 1.0,
        });
        let h = sections(&r);
        assert!(
            h.contains("<details><summary>map ktstr_tasks (id 2, hash): 20 of 4096 entries"),
            "{h}"
        );
        assert!(
            h.contains("[54] {enqueues=42}") && h.contains("19 more entries"),
            "{h}"
        );
        assert!(sections(&RunRecord::new("t::y", Verdict::Pass)).is_empty());
    }
}
