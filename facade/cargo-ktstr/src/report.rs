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
    // The kernel is a dimension of a run: `steady@7.3.4`.
    let at = r["kernel"]["label"]
        .as_str()
        .map_or_else(String::new, |k| format!("@{k}"));
    match r["preset"].as_str() {
        Some(p) => (format!("gauntlet.{path}"), format!("{p}{at}")),
        None => {
            let (class, name) = path.rsplit_once("::").unwrap_or(("", path));
            let krate = test.split_once("::").map_or("", |(k, _)| k);
            let class = if class.is_empty() {
                krate.to_string()
            } else {
                format!("{krate}::{class}")
            };
            (class, format!("{name}{at}"))
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

/// A Chrome trace-event JSON of one run (the Trace Event Format: every
/// event with `ph`, `name`, `pid`, `tid` and, but for metadata, `ts` in
/// microseconds; sorted by time). Each test is a process named after it;
/// its phases are consecutive slices on the `phases` track, its checks
/// instants at the end of the body, its key figures counters; its scenario
/// steps slices on the `steps` track, each from its start to the next one's
/// (the last to the verdict); the monitor's samples counters (per-CPU
/// `nr_running`, `deepest DSQ`) and the scheduler attaching and leaving
/// instants; each worker a track with its measured CPU time and run delay
/// as slices laid end to end (totals over the window: the record has no
/// finer timeline).
pub fn trace(records: &[Value]) -> Value {
    let mut ev = Vec::new();
    for (i, r) in records.iter().enumerate() {
        trace_record(i + 1, r, &mut ev);
    }
    // Metadata first, then by time: each track's events in time order.
    // (The sort is stable: slices starting together keep their order.)
    ev.sort_by(|a, b| {
        let key = |e: &Value| (e["ph"] != "M", e["ts"].as_f64().unwrap_or(0.0));
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    json!({"traceEvents": ev, "displayTimeUnit": "ms"})
}

/// Track (thread) ids within a test's process.
const PHASES_TID: usize = 0;
const STEPS_TID: usize = 1;
const FIRST_WORKER_TID: usize = 2;

/// Seconds as whole microseconds, the trace's time unit. Slices laid end to
/// end take their ends from the same rounding, so one ends exactly where
/// the next starts (with raw floats a start could fall a rounding error
/// inside the previous slice, and a viewer nests it there).
fn us(secs: f64) -> f64 {
    (secs * 1e6).round()
}

/// A counter event: only finite numbers are counter values.
fn counter(pid: usize, name: &str, ts: f64, args: serde_json::Map<String, Value>) -> Option<Value> {
    let args: serde_json::Map<String, Value> = args
        .into_iter()
        .filter(|(_, v)| v.as_f64().is_some_and(f64::is_finite))
        .collect();
    (!args.is_empty()).then(
        || json!({"ph": "C", "name": name, "pid": pid, "tid": PHASES_TID, "ts": ts, "args": args}),
    )
}

fn trace_record(pid: usize, r: &Value, ev: &mut Vec<Value>) {
    let (class, name) = name_of(r);
    let thread = |tid: usize, name: String| json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}});
    ev.push(
        json!({"ph": "M", "name": "process_name", "pid": pid, "tid": PHASES_TID,
        "args": {"name": format!("{class}::{name} [{}]", r["topology"].as_str().unwrap_or("?"))}}),
    );
    ev.push(thread(PHASES_TID, "phases".into()));
    let mut t = 0.0f64;
    let mut body_end = None;
    for (p, s) in phases(r) {
        let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
        ev.push(
            json!({"ph": "X", "name": p, "cat": "phase", "pid": pid, "tid": PHASES_TID,
            "ts": us(t), "dur": us(t + s) - us(t)}),
        );
        if p == "boot_to_init" {
            ev.push(
                json!({"ph": "i", "name": "init reached", "cat": "scheduler",
                "pid": pid, "tid": PHASES_TID, "ts": us(t + s), "s": "p"}),
            );
        }
        t += s;
        if p == "body" {
            body_end = Some(t);
        }
    }
    let at = us(body_end.unwrap_or(t));
    for c in r["checks"].as_array().into_iter().flatten() {
        ev.push(
            json!({"ph": "i", "name": format!("check {}", c["check"].as_str().unwrap_or("?")),
            "cat": if c["failed"] == true { "failed" } else { "check" },
            "pid": pid, "tid": PHASES_TID, "ts": at, "s": "t",
            "args": {"message": c["message"], "figure": c["figure"]}}),
        );
    }
    if let Some(figs) = r["figures"].as_object() {
        for (k, v) in figs {
            let args = [(k.clone(), v.clone())].into_iter().collect();
            ev.extend(counter(pid, k, at, args));
        }
    }
    // Times from the boot (monitor samples, steps, the verdict) follow the
    // initramfs and the slot wait.
    let boot = r["phases_s"]["initramfs"].as_f64().unwrap_or(0.0)
        + r["phases_s"]["slot_wait"].as_f64().unwrap_or(0.0);
    let from_boot = |v: &Value| v.as_f64().filter(|t| t.is_finite() && *t >= 0.0);
    let mut attached: Option<String> = None;
    for sample in r["monitor"]["series"].as_array().into_iter().flatten() {
        let Some(st) = from_boot(&sample["t"]) else {
            continue;
        };
        let ts = us(boot + st);
        let cpus: serde_json::Map<String, Value> = sample["nr_running"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(c, n)| (format!("cpu{c}"), n.clone()))
            .collect();
        ev.extend(counter(pid, "nr_running", ts, cpus));
        let dsq = [("queued".to_string(), sample["deepest_dsq"].clone())];
        ev.extend(counter(pid, "deepest DSQ", ts, dsq.into_iter().collect()));
        let now = sample["scheduler"].as_str().map(str::to_string);
        if now != attached {
            let name = match (&attached, &now) {
                (_, Some(n)) => format!("scheduler {n} attached"),
                (Some(o), None) => format!("scheduler {o} left"),
                (None, None) => String::new(),
            };
            ev.push(
                json!({"ph": "i", "name": name, "cat": "scheduler", "pid": pid,
                "tid": PHASES_TID, "ts": ts, "s": "p"}),
            );
            attached = now;
        }
    }
    // The steps, each until the next starts; the last until the verdict.
    let steps: Vec<(f64, &Value)> = r["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((from_boot(&s["t"])?, s)))
        .collect();
    if !steps.is_empty() {
        ev.push(thread(STEPS_TID, "steps".into()));
    }
    let verdict = from_boot(&r["verdict_t"]);
    for (k, (start, s)) in steps.iter().enumerate() {
        let end = steps
            .get(k + 1)
            .map(|(t, _)| *t)
            .or(verdict)
            .unwrap_or(*start)
            .max(*start);
        ev.push(
            json!({"ph": "X", "name": format!("step {}", s["index"]), "cat": "step",
            "pid": pid, "tid": STEPS_TID, "ts": us(boot + start), "dur": us(boot + end) - us(boot + start),
            "args": {"ops": s["ops"], "guest_uptime_s": s["guest_s"]}}),
        );
    }
    let body_start = body_end.map(|e| e - r["phases_s"]["body"].as_f64().unwrap_or(0.0));
    for (w, worker) in r["workers"].as_array().into_iter().flatten().enumerate() {
        let tid = w + FIRST_WORKER_TID;
        ev.push(thread(
            tid,
            format!(
                "worker {} ({} {})",
                worker["index"],
                worker["group"].as_str().unwrap_or("?"),
                worker["work"].as_str().unwrap_or("?")
            ),
        ));
        let secs = |d: &Value| {
            let s = d["secs"].as_f64().unwrap_or(0.0) + d["nanos"].as_f64().unwrap_or(0.0) * 1e-9;
            if s.is_finite() { s.max(0.0) } else { 0.0 }
        };
        let start = body_start.unwrap_or(0.0).max(0.0);
        let run = secs(&worker["cpu_time"]);
        let wait = secs(&worker["run_delay"]);
        ev.push(
            json!({"ph": "X", "name": "running (total)", "cat": "worker", "pid": pid,
            "tid": tid, "ts": us(start), "dur": us(start + run) - us(start),
            "args": {"progress": worker["progress"], "unit": worker["unit"]}}),
        );
        ev.push(
            json!({"ph": "X", "name": "waiting runnable (total)", "cat": "worker",
            "pid": pid, "tid": tid, "ts": us(start + run), "dur": us(start + run + wait) - us(start + run)}),
        );
    }
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
                    {"t": 9.0, "nr_running": [0, 0], "deepest_dsq": 0, "scheduler": null}]},
                "steps": [{"index": 0, "t": 7.5, "guest_s": 9.0, "ops": ["add cg_0 (1 worker)"]},
                    {"index": 1, "t": 8.25, "guest_s": 10.2, "ops": ["stop cg_0"]}],
                "verdict_t": 12.0}),
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
    fn the_trace_conforms_and_has_the_expected_slices_and_counters() {
        let t = trace(&records());
        assert_eq!(crate::trace_format::violations(&t), Vec::<String>::new());
        let ev = t["traceEvents"].as_array().expect("events");
        let of = |ph: &str, name: &str, pid: u64| {
            ev.iter()
                .filter(|e| e["ph"] == ph && e["name"] == name && e["pid"] == pid)
                .collect::<Vec<_>>()
        };
        let names = |ph: &str, pid: u64, tid: u64| {
            ev.iter()
                .filter(|e| e["ph"] == ph && e["pid"] == pid && e["tid"] == tid)
                .map(|e| e["name"].as_str().expect("name"))
                .collect::<Vec<_>>()
        };
        // Each test a process named after it; its tracks named.
        let process = |pid: u64| of("M", "process_name", pid)[0]["args"]["name"].clone();
        assert_eq!(process(1), "examples::steady [1n1l2c1t]");
        assert_eq!(process(2), "gauntlet.m::bad::llc3 [1n3l2c1t]");
        assert_eq!(process(3), "examples::odd [?]");
        let threads: Vec<&Value> = of("M", "thread_name", 1)
            .into_iter()
            .map(|e| &e["args"]["name"])
            .collect();
        assert_eq!(threads, ["phases", "steps", "worker 0 (cg_0 spin)"]);
        // Phases follow one another: body starts after initramfs, slot wait, boot.
        assert_eq!(
            names("X", 1, 0),
            ["initramfs", "slot_wait", "boot_to_init", "body", "teardown"]
        );
        let body = of("X", "body", 1);
        assert_eq!(body[0]["ts"].as_f64(), Some(7.5e6));
        assert_eq!(body[0]["dur"].as_f64(), Some(5e6));
        // The steps: slices on their track from their start (boot + t) to
        // the next one's, the last to the verdict, with their ops.
        assert_eq!(names("X", 1, 1), ["step 0", "step 1"]);
        let step0 = of("X", "step 0", 1);
        assert_eq!(step0[0]["ts"].as_f64(), Some(9e6));
        assert_eq!(step0[0]["dur"].as_f64(), Some(0.75e6));
        assert_eq!(step0[0]["args"]["ops"][0], "add cg_0 (1 worker)");
        let step1 = of("X", "step 1", 1);
        assert_eq!(step1[0]["ts"].as_f64(), Some(9.75e6));
        assert_eq!(step1[0]["dur"].as_f64(), Some(3.75e6));
        assert_eq!(step1[0]["args"]["guest_uptime_s"].as_f64(), Some(10.2));
        // The check is an instant at the end of the body, the figure a counter.
        let check = of("i", "check fairness", 1);
        assert_eq!(check[0]["ts"].as_f64(), Some(12.5e6));
        assert_eq!(check[0]["args"]["figure"]["value"].as_f64(), Some(3.0));
        let gap = of("C", "worst_gap_ms", 1);
        assert_eq!(gap[0]["args"]["worst_gap_ms"].as_f64(), Some(12.5));
        // The worker's run and wait totals.
        assert_eq!(
            names("X", 1, 2),
            ["running (total)", "waiting runnable (total)"]
        );
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
        assert_eq!(of("C", "deepest DSQ", 1).len(), 2, "no counter of a null");
        assert_eq!(
            of("i", "scheduler scx_x attached", 1)[0]["ts"].as_f64(),
            Some(9.5e6)
        );
        assert_eq!(of("i", "scheduler scx_x left", 1).len(), 1);
        // Every counter this trace has, by process.
        let mut counters: Vec<(u64, &str)> = ev
            .iter()
            .filter(|e| e["ph"] == "C")
            .map(|e| {
                (
                    e["pid"].as_u64().expect("pid"),
                    e["name"].as_str().expect("name"),
                )
            })
            .collect();
        counters.dedup();
        counters.sort();
        counters.dedup();
        assert_eq!(
            counters,
            [(1, "deepest DSQ"), (1, "nr_running"), (1, "worst_gap_ms")]
        );
        // A test without steps has no steps track; phases of a broken record
        // still conform.
        assert!(names("X", 2, 1).is_empty());
        let broken = vec![
            json!({"test": "k::x", "phases_s": {"body": -1.0, "total": 1.0},
            "steps": [{"index": 0, "t": -2.0}, {"index": 1, "t": 1.0}], "verdict_t": 0.5,
            "figures": {"a": null}, "monitor": {"series": [{"t": "x"}]}}),
        ];
        assert_eq!(
            crate::trace_format::violations(&trace(&broken)),
            Vec::<String>::new()
        );
        // Phases whose float sums round badly (a real run's: the boot began
        // a rounding error inside the slot wait) still lie end to end.
        let awkward = vec![
            json!({"test": "k::y", "phases_s": {"initramfs": 0.001_003_915,
            "slot_wait": 72.588_984_5, "boot_to_init": 8.380_282_857, "body": 4.417,
            "teardown": 0.09, "total": 84.3}}),
        ];
        assert_eq!(
            crate::trace_format::violations(&trace(&awkward)),
            Vec::<String>::new()
        );
    }

    /// The records of a real run, one failing and two passing two-step
    /// tests: `facade/cargo-ktstr/scripts/report-demo.sh` made them (the
    /// records under `target/ktstr/runs/<run>/` of its package, as a JSON
    /// array, the monitor series thinned to every 4th sample, the host name
    /// replaced).
    fn demo_run() -> Vec<Value> {
        serde_json::from_str(include_str!("testdata/demo-run.json")).expect("the fixture parses")
    }

    #[test]
    fn a_real_runs_junit_and_trace_validate_with_its_steps() {
        let recs = demo_run();
        let x = junit("20261127-131835-17268", &recs);
        assert_eq!(
            crate::junit_schema::violations(&x),
            Vec::<String>::new(),
            "{x}"
        );
        assert!(x.contains("tests=\"3\" failures=\"1\""), "{x}");
        let t = trace(&recs);
        assert_eq!(crate::trace_format::violations(&t), Vec::<String>::new());
        let ev = t["traceEvents"].as_array().expect("events");
        for pid in 1..=3u64 {
            let steps: Vec<&Value> = ev
                .iter()
                .filter(|e| e["pid"] == pid && e["cat"] == "step")
                .collect();
            let names: Vec<&str> = steps.iter().filter_map(|e| e["name"].as_str()).collect();
            assert_eq!(names, ["step 0", "step 1"], "pid {pid}");
            // Step 0 ends where step 1 starts; step 1 lasts until the verdict.
            let end0 =
                steps[0]["ts"].as_f64().unwrap_or(0.0) + steps[0]["dur"].as_f64().unwrap_or(0.0);
            assert_eq!(Some(end0), steps[1]["ts"].as_f64());
            assert!(steps[1]["dur"].as_f64().is_some_and(|d| d > 0.0));
            let nr = ev
                .iter()
                .filter(|e| e["pid"] == pid && e["ph"] == "C" && e["name"] == "nr_running")
                .count();
            // One counter per sample that read a runqueue.
            let read = recs[pid as usize - 1]["monitor"]["series"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["nr_running"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(Value::is_u64))
                })
                .count();
            assert!(read > 10);
            assert_eq!(nr, read, "pid {pid}");
        }
        let h = crate::html::html("demo", &recs);
        assert_eq!(
            h.matches("\nstep 1\n</text>").count(),
            3,
            "one plot over time per test"
        );
    }
}
