//! Reports of a stored run for other tools (pure): JUnit XML for CI systems
//! and a Chrome trace-event JSON per run that Perfetto's UI opens.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// `text` with XML's five special characters escaped, and the characters
/// XML 1.0 forbids (controls, U+FFFE, U+FFFF) dropped.
pub fn xml_escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            '\t' | '\n' | '\r' => s.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => s.push(c),
        }
    }
    s
}

fn name_of(r: &Value) -> (String, String) {
    let test = r["test"].as_str().unwrap_or("?");
    let path = test.split_once("::").map_or(test, |(_, p)| p);
    match r["preset"].as_str() {
        Some(p) => (format!("gauntlet.{path}"), p.to_string()),
        None => {
            let (class, name) = path.rsplit_once("::").unwrap_or(("", path));
            let krate = test.split_once("::").map_or("", |(k, _)| k);
            let class = if class.is_empty() {
                krate.to_string()
            } else {
                format!("{krate}::{class}")
            };
            (class, name.to_string())
        }
    }
}

/// `text` as an XML Schema token: whitespace runs collapsed to one space,
/// none at the ends, `?` for nothing (JUnit's names and host name).
fn token(text: &str) -> String {
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() { "?".into() } else { t }
}

/// Seconds as JUnit's `time`: a non-negative decimal, 3 places.
fn junit_secs(s: f64) -> String {
    // `+ 0.0` turns -0.0 (the sum of no records) into 0.0.
    format!("{:.3}", if s.is_finite() { s.max(0.0) + 0.0 } else { 0.0 })
}

/// The JUnit XML of one run's records: one testcase per test and variant,
/// a failure's text in `<failure>`, an inconclusive verdict as `<skipped>`.
/// The suite's `timestamp` is the earliest start of a record (UTC), its
/// `hostname` the host of the first record.
pub fn junit(run: &str, records: &[Value]) -> String {
    let count = |v: &str| records.iter().filter(|r| r["verdict"] == v).count();
    let time = |r: &Value| r["phases_s"]["total"].as_f64().unwrap_or(0.0);
    let total: f64 = records.iter().map(time).sum();
    let started = records
        .iter()
        .filter_map(|r| Some(r["host"]["unix_time"].as_f64()? - time(r)))
        .fold(f64::MAX, f64::min);
    let started = if started == f64::MAX {
        0
    } else {
        started.max(0.0) as u64
    };
    let host = records
        .iter()
        .find_map(|r| r["host"]["hostname"].as_str())
        .unwrap_or("localhost");
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"ktstr\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        records.len(),
        count("fail"),
        count("inconclusive"),
        junit_secs(total),
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\" hostname=\"{}\">",
        xml_escape(&token(run)),
        records.len(),
        count("fail"),
        count("inconclusive"),
        junit_secs(total),
        ktstr::results::utc_datetime(started),
        xml_escape(&token(host)),
    );
    for r in records {
        let (class, name) = name_of(r);
        let _ = writeln!(
            x,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">",
            xml_escape(&token(&class)),
            xml_escape(&token(&name)),
            junit_secs(time(r))
        );
        let detail = r["detail"].as_str().unwrap_or("");
        let failure = r["failure"].as_str().unwrap_or(detail);
        match r["verdict"].as_str() {
            Some("fail") => {
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\" type=\"ktstr\">{}</failure>",
                    xml_escape(detail),
                    xml_escape(failure)
                );
            }
            Some("inconclusive") => {
                let _ = writeln!(
                    x,
                    "      <skipped message=\"inconclusive: {}\"/>",
                    xml_escape(detail)
                );
            }
            _ => {}
        }
        let figures: Vec<String> = r["figures"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_f64().map(|f| format!("{k}={f:.2}")))
            .collect();
        let _ = writeln!(
            x,
            "      <system-out>topology {} kernel {} scheduler {} {}</system-out>",
            xml_escape(r["topology"].as_str().unwrap_or("?")),
            xml_escape(r["kernel"]["release"].as_str().unwrap_or("?")),
            xml_escape(r["scheduler"]["name"].as_str().unwrap_or("EEVDF")),
            xml_escape(&figures.join(" "))
        );
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// The phases of a record, in order, as (name, seconds).
fn phases(r: &Value) -> Vec<(&'static str, f64)> {
    ["initramfs", "slot_wait", "boot_to_init", "body", "teardown"]
        .into_iter()
        .filter_map(|p| r["phases_s"][p].as_f64().map(|s| (p, s)))
        .collect()
}

/// A Chrome trace-event JSON of one run: each test a process; its phases
/// as consecutive slices on one track, its checks as instants at the end
/// of the body, its key figures as counters, each worker a track with
/// its measured CPU time and run delay as slices laid end to end (totals
/// over the window: the record has no finer timeline).
pub fn trace(records: &[Value]) -> Value {
    let mut ev = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let pid = i + 1;
        let (class, name) = name_of(r);
        ev.push(json!({"ph": "M", "name": "process_name", "pid": pid,
            "args": {"name": format!("{class}::{name} [{}]", r["topology"].as_str().unwrap_or("?"))}}));
        ev.push(
            json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": 0,
            "args": {"name": "phases"}}),
        );
        let mut t = 0.0f64;
        let mut body_end = None;
        for (p, s) in phases(r) {
            ev.push(
                json!({"ph": "X", "name": p, "cat": "phase", "pid": pid, "tid": 0,
                "ts": t * 1e6, "dur": s * 1e6}),
            );
            if p == "boot_to_init" {
                ev.push(
                    json!({"ph": "i", "name": "init reached", "cat": "scheduler",
                    "pid": pid, "tid": 0, "ts": (t + s) * 1e6, "s": "p"}),
                );
            }
            t += s;
            if p == "body" {
                body_end = Some(t);
            }
        }
        let at = body_end.unwrap_or(t) * 1e6;
        for c in r["checks"].as_array().into_iter().flatten() {
            ev.push(
                json!({"ph": "i", "name": format!("check {}", c["check"].as_str().unwrap_or("?")),
                "cat": if c["failed"] == true { "failed" } else { "check" },
                "pid": pid, "tid": 0, "ts": at, "s": "t",
                "args": {"message": c["message"], "figure": c["figure"]}}),
            );
        }
        if let Some(figs) = r["figures"].as_object() {
            for (k, v) in figs {
                ev.push(json!({"ph": "C", "name": k, "pid": pid, "ts": at, "args": {k: v}}));
            }
        }
        // The monitor's samples: per-CPU nr_running and the deepest DSQ as
        // counters, the scheduler attaching and leaving as instants. Sample
        // times count from the boot, which follows initramfs and slot wait.
        let boot = r["phases_s"]["initramfs"].as_f64().unwrap_or(0.0)
            + r["phases_s"]["slot_wait"].as_f64().unwrap_or(0.0);
        let mut attached: Option<String> = None;
        for sample in r["monitor"]["series"].as_array().into_iter().flatten() {
            let ts = (boot + sample["t"].as_f64().unwrap_or(0.0)) * 1e6;
            let cpus: serde_json::Map<String, Value> = sample["nr_running"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, n)| n.is_u64())
                .map(|(c, n)| (format!("cpu{c}"), n.clone()))
                .collect();
            if !cpus.is_empty() {
                ev.push(
                    json!({"ph": "C", "name": "nr_running", "pid": pid, "ts": ts, "args": cpus}),
                );
            }
            if sample["deepest_dsq"].is_u64() {
                ev.push(
                    json!({"ph": "C", "name": "deepest DSQ", "pid": pid, "ts": ts,
                    "args": {"queued": sample["deepest_dsq"]}}),
                );
            }
            let now = sample["scheduler"].as_str().map(str::to_string);
            if now != attached {
                let name = match (&attached, &now) {
                    (_, Some(n)) => format!("scheduler {n} attached"),
                    (Some(o), None) => format!("scheduler {o} left"),
                    (None, None) => String::new(),
                };
                ev.push(
                    json!({"ph": "i", "name": name, "cat": "scheduler", "pid": pid,
                    "tid": 0, "ts": ts, "s": "p"}),
                );
                attached = now;
            }
        }
        let body_start = body_end.map(|e| e - r["phases_s"]["body"].as_f64().unwrap_or(0.0));
        for (w, worker) in r["workers"].as_array().into_iter().flatten().enumerate() {
            let tid = w + 1;
            ev.push(json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": format!("worker {} ({} {})", worker["index"],
                    worker["group"].as_str().unwrap_or("?"), worker["work"].as_str().unwrap_or("?"))}}));
            let secs = |d: &Value| {
                d["secs"].as_f64().unwrap_or(0.0) + d["nanos"].as_f64().unwrap_or(0.0) * 1e-9
            };
            let start = body_start.unwrap_or(0.0);
            let run = secs(&worker["cpu_time"]);
            let wait = secs(&worker["run_delay"]);
            ev.push(
                json!({"ph": "X", "name": "running (total)", "cat": "worker", "pid": pid,
                "tid": tid, "ts": start * 1e6, "dur": run * 1e6,
                "args": {"progress": worker["progress"], "unit": worker["unit"]}}),
            );
            ev.push(
                json!({"ph": "X", "name": "waiting runnable (total)", "cat": "worker",
                "pid": pid, "tid": tid, "ts": (start + run) * 1e6, "dur": wait * 1e6}),
            );
        }
    }
    json!({"traceEvents": ev, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Value> {
        vec![
            json!({"test": "examples::steady", "preset": null, "verdict": "pass",
                "detail": "pass", "topology": "1n1l2c1t", "kernel": {"release": "7.3"},
                "figures": {"worst_gap_ms": 12.5},
                "checks": [{"check": "fairness", "failed": false, "message": "spread 3%",
                    "figure": {"value": 3.0, "threshold": 25.0, "unit": "%"}}],
                "workers": [{"index": 0, "group": "cg_0", "work": "spin", "unit": "spins",
                    "progress": 10, "cpu_time": {"secs": 2, "nanos": 0},
                    "run_delay": {"secs": 1, "nanos": 500_000_000}}],
                "phases_s": {"initramfs": 0.5, "slot_wait": 1.0, "boot_to_init": 6.0,
                    "body": 5.0, "teardown": 0.1, "total": 12.6},
                "monitor": {"series": [
                    {"t": 7.0, "nr_running": [1, 2], "deepest_dsq": null, "scheduler": null},
                    {"t": 8.0, "nr_running": [3, null], "deepest_dsq": 4, "scheduler": "scx_x"},
                    {"t": 9.0, "nr_running": [0, 0], "deepest_dsq": 0, "scheduler": null}]}}),
            json!({"test": "examples::m::bad", "preset": "llc3", "verdict": "fail",
                "detail": "gap <1 s> & more", "failure": "gap <1 s> & more\nline2\u{1}",
                "topology": "1n3l2c1t", "phases_s": {"total": 3.0}}),
            json!({"test": "examples::odd", "verdict": "inconclusive", "detail": "timing",
                "phases_s": {"total": 1.0}}),
        ]
    }

    #[test]
    fn junit_has_one_testcase_per_record_and_escapes_text() {
        let x = junit("run-1", &records());
        assert!(x.starts_with("<?xml"));
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(x.contains("classname=\"examples\" name=\"steady\" time=\"12.600\""));
        assert!(x.contains("classname=\"gauntlet.m::bad\" name=\"llc3\""));
        assert!(x.contains(
            "<failure message=\"gap &lt;1 s&gt; &amp; more\" type=\"ktstr\">gap &lt;1 s&gt; &amp; more\nline2</failure>"
        ));
        assert!(x.contains("<skipped message=\"inconclusive: timing\"/>"));
        assert!(x.contains("worst_gap_ms=12.50"));
        // Every opened element closes.
        for tag in [
            "testsuites",
            "testsuite",
            "testcase",
            "system-out",
            "failure",
        ] {
            let open =
                x.matches(&format!("<{tag} ")).count() + x.matches(&format!("<{tag}>")).count();
            assert_eq!(open, x.matches(&format!("</{tag}>")).count(), "{tag}");
        }
        assert_eq!(xml_escape("a'b\"c"), "a&apos;b&quot;c");
    }

    #[test]
    fn the_junit_of_a_run_validates_against_the_junit_schema() {
        let mut recs = records();
        recs[0]["host"] = json!({"hostname": "ci box", "unix_time": 1_795_772_461});
        let x = junit("run-1", &recs);
        assert_eq!(
            crate::junit_schema::violations(&x),
            Vec::<String>::new(),
            "{x}"
        );
        assert!(
            x.contains("timestamp=\"2026-11-27T09:40:48\" hostname=\"ci box\""),
            "{x}"
        );
        // What a record may hold that the schema's types do not take: names
        // with line breaks, a negative or missing time, forbidden characters,
        // no records at all.
        let odd = vec![
            json!({"test": "k::a  b\nc", "verdict": "fail", "detail": "\u{fffe}x",
            "failure": "\u{0}y", "phases_s": {"total": -3.0}, "host": {"hostname": ""}}),
        ];
        let x = junit("run 2", &odd);
        assert_eq!(
            crate::junit_schema::violations(&x),
            Vec::<String>::new(),
            "{x}"
        );
        let x = junit("", &[]);
        assert_eq!(
            crate::junit_schema::violations(&x),
            Vec::<String>::new(),
            "{x}"
        );
    }

    #[test]
    fn the_trace_has_phase_slices_check_instants_and_figure_counters() {
        let t = trace(&records());
        let ev = t["traceEvents"].as_array().expect("events");
        let of = |ph: &str, name: &str, pid: u64| {
            ev.iter()
                .filter(|e| e["ph"] == ph && e["name"] == name && e["pid"] == pid)
                .collect::<Vec<_>>()
        };
        // Phases follow one another: body starts after initramfs, slot wait, boot.
        let body = of("X", "body", 1);
        assert_eq!(body.len(), 1);
        assert_eq!(body[0]["ts"].as_f64(), Some(7.5e6));
        assert_eq!(body[0]["dur"].as_f64(), Some(5e6));
        // The check is an instant at the end of the body, the figure a counter.
        let check = of("i", "check fairness", 1);
        assert_eq!(check[0]["ts"].as_f64(), Some(12.5e6));
        assert_eq!(check[0]["args"]["figure"]["value"].as_f64(), Some(3.0));
        let gap = of("C", "worst_gap_ms", 1);
        assert_eq!(gap[0]["args"]["worst_gap_ms"].as_f64(), Some(12.5));
        // The worker's run and wait totals.
        let run = of("X", "running (total)", 1);
        assert_eq!(run[0]["dur"].as_f64(), Some(2e6));
        let wait = of("X", "waiting runnable (total)", 1);
        assert_eq!(wait[0]["ts"].as_f64(), Some(9.5e6));
        assert_eq!(wait[0]["dur"].as_f64(), Some(1.5e6));
        // Monitor samples: counters at boot + t; the scheduler's comings and goings.
        let nr = of("C", "nr_running", 1);
        assert_eq!(nr.len(), 3);
        assert_eq!(nr[0]["ts"].as_f64(), Some(8.5e6));
        assert_eq!(nr[0]["args"]["cpu1"].as_u64(), Some(2));
        assert!(nr[1]["args"]["cpu1"].is_null(), "an unread CPU is left out");
        assert_eq!(of("C", "deepest DSQ", 1).len(), 2);
        assert_eq!(
            of("i", "scheduler scx_x attached", 1)[0]["ts"].as_f64(),
            Some(9.5e6)
        );
        assert_eq!(of("i", "scheduler scx_x left", 1).len(), 1);
        // Each test is a named process; every event has what Perfetto needs.
        assert_eq!(of("M", "process_name", 2).len(), 1);
        for e in ev {
            assert!(e["ph"].is_string() && e["pid"].is_u64(), "{e}");
            if e["ph"] != "M" {
                assert!(e["ts"].is_number(), "{e}");
            }
        }
    }
}
