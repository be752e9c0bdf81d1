//! Reports of a stored run for other tools (pure): JUnit XML for CI systems
//! and a Chrome trace-event JSON per run that Perfetto's UI opens.

use std::fmt::Write as _;

use ktstr_record::{RunRecord, Verdict};
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

/// `text`, or `?` when empty (a record of a run that ended before it
/// learned that).
pub(crate) fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "?" } else { text }
}

fn name_of(r: &RunRecord) -> (String, String) {
    let test = r.test.as_str();
    let path = test.split_once("::").map_or(test, |(_, p)| p);
    // The kernel is a dimension of a run: `steady@7.3.4`.
    let at = r
        .kernel_label()
        .map_or_else(String::new, |k| format!("@{k}"));
    match r.preset.as_deref() {
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
pub fn junit(run: &str, records: &[RunRecord]) -> String {
    let count = |v: Verdict| records.iter().filter(|r| r.verdict == v).count();
    let time = |r: &RunRecord| r.phases_s.total;
    let total: f64 = records.iter().map(time).sum();
    // A record's end, less its time (0: a record that does not know it).
    let started = records
        .iter()
        .filter(|r| r.host.unix_time > 0)
        .map(|r| r.host.unix_time as f64 - time(r))
        .fold(f64::MAX, f64::min);
    let started = if started == f64::MAX {
        0
    } else {
        started.max(0.0) as u64
    };
    let host = records
        .iter()
        .find_map(|r| r.host.hostname.as_deref())
        .unwrap_or("localhost");
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"ktstr\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        records.len(),
        count(Verdict::Fail),
        count(Verdict::Inconclusive),
        junit_secs(total),
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\" hostname=\"{}\">",
        xml_escape(&token(run)),
        records.len(),
        count(Verdict::Fail),
        count(Verdict::Inconclusive),
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
        let detail = r.detail.as_str();
        let failure = r.failure_text();
        match r.verdict {
            Verdict::Fail => {
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\" type=\"ktstr\">{}</failure>",
                    xml_escape(detail),
                    xml_escape(failure)
                );
            }
            Verdict::Inconclusive => {
                let _ = writeln!(
                    x,
                    "      <skipped message=\"inconclusive: {}\"/>",
                    xml_escape(detail)
                );
            }
            _ => {}
        }
        let figures: Vec<String> = r
            .figures
            .iter()
            .map(|(k, f)| format!("{k}={f:.2}"))
            .collect();
        let _ = writeln!(
            x,
            "      <system-out>topology {} kernel {} scheduler {} {}</system-out>",
            xml_escape(or_unknown(&r.topology)),
            xml_escape(r.kernel_release().unwrap_or("?")),
            xml_escape(r.scheduler.as_ref().map_or("EEVDF", |s| s.name.as_str())),
            xml_escape(&figures.join(" "))
        );
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
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
pub fn trace(records: &[RunRecord]) -> Value {
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

fn trace_record(pid: usize, r: &RunRecord, ev: &mut Vec<Value>) {
    let (class, name) = name_of(r);
    let thread = |tid: usize, name: String| json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}});
    ev.push(
        json!({"ph": "M", "name": "process_name", "pid": pid, "tid": PHASES_TID,
        "args": {"name": format!("{class}::{name} [{}]", or_unknown(&r.topology))}}),
    );
    ev.push(thread(PHASES_TID, "phases".into()));
    let mut t = 0.0f64;
    let mut body_end = None;
    for (p, s) in r.phases_s.in_order() {
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
    for c in &r.checks {
        ev.push(json!({"ph": "i", "name": format!("check {}", c.check),
            "cat": if c.failed { "failed" } else { "check" },
            "pid": pid, "tid": PHASES_TID, "ts": at, "s": "t",
            "args": {"message": c.message, "figure": c.figure}}));
    }
    for (k, v) in &r.figures {
        let args = [(k.clone(), json!(v))].into_iter().collect();
        ev.extend(counter(pid, k, at, args));
    }
    // Times from the boot (monitor samples, steps, the verdict) follow the
    // initramfs and the slot wait.
    let boot = r.phases_s.initramfs + r.phases_s.slot_wait;
    let from_boot = |t: f64| Some(t).filter(|t| t.is_finite() && *t >= 0.0);
    let mut attached: Option<String> = None;
    for sample in r.monitor.iter().flat_map(|m| &m.series) {
        let Some(st) = from_boot(sample.t) else {
            continue;
        };
        let ts = us(boot + st);
        let cpus: serde_json::Map<String, Value> = sample
            .nr_running
            .iter()
            .flatten()
            .enumerate()
            .map(|(c, n)| (format!("cpu{c}"), json!(n)))
            .collect();
        ev.extend(counter(pid, "nr_running", ts, cpus));
        let dsq = [("queued".to_string(), json!(sample.deepest_dsq))];
        ev.extend(counter(pid, "deepest DSQ", ts, dsq.into_iter().collect()));
        let now = sample.scheduler.clone();
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
    let steps: Vec<(f64, &ktstr_record::StepRecord)> = r
        .steps
        .iter()
        .filter_map(|s| Some((from_boot(s.t)?, s)))
        .collect();
    if !steps.is_empty() {
        ev.push(thread(STEPS_TID, "steps".into()));
    }
    let verdict = r.verdict_t.and_then(from_boot);
    for (k, (start, s)) in steps.iter().enumerate() {
        let end = steps
            .get(k + 1)
            .map(|(t, _)| *t)
            .or(verdict)
            .unwrap_or(*start)
            .max(*start);
        ev.push(
            json!({"ph": "X", "name": format!("step {}", s.index), "cat": "step",
            "pid": pid, "tid": STEPS_TID, "ts": us(boot + start), "dur": us(boot + end) - us(boot + start),
            "args": {"ops": s.ops, "guest_uptime_s": s.guest_s}}),
        );
    }
    let body_start = body_end.map(|e| e - r.phases_s.body.unwrap_or(0.0));
    for (w, worker) in r.workers.iter().enumerate() {
        let tid = w + FIRST_WORKER_TID;
        ev.push(thread(
            tid,
            format!(
                "worker {} ({} {})",
                worker.index,
                or_unknown(&worker.group),
                or_unknown(&worker.work)
            ),
        ));
        let start = body_start.unwrap_or(0.0).max(0.0);
        let run = ktstr_record::secs(worker.cpu_time);
        let wait = ktstr_record::secs(worker.run_delay);
        ev.push(
            json!({"ph": "X", "name": "running (total)", "cat": "worker", "pid": pid,
            "tid": tid, "ts": us(start), "dur": us(start + run) - us(start),
            "args": {"progress": worker.progress, "unit": worker.unit}}),
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

    use ktstr_record::{
        CheckRecord, Figure, HostFacts, MonitorSample, MonitorSummary, PhaseSeconds, StepRecord,
        WorkerRecord,
    };

    fn phases(initramfs: f64, slot_wait: f64, boot: f64, body: f64, teardown: f64) -> PhaseSeconds {
        PhaseSeconds {
            initramfs,
            slot_wait,
            boot_to_init: Some(boot),
            body: Some(body),
            teardown: Some(teardown),
            total: initramfs + slot_wait + boot + body + teardown,
        }
    }

    fn monitor(series: Vec<MonitorSample>) -> MonitorSummary {
        MonitorSummary {
            hz: 10,
            samples: series.len() as u64,
            series,
            unavailable: None,
            kernel: None,
            deepest_dsq: None,
            oldest_wait_ms: None,
            last: None,
        }
    }

    fn sample(
        t: f64,
        nr: Option<Vec<Option<u32>>>,
        dsq: Option<u32>,
        sched: Option<&str>,
    ) -> MonitorSample {
        MonitorSample {
            t,
            nr_running: nr,
            deepest_dsq: dsq,
            scheduler: sched.map(str::to_string),
            guest_s: None,
        }
    }

    fn step(index: u32, t: f64, guest_s: f64, ops: &[&str]) -> StepRecord {
        StepRecord {
            index,
            t,
            guest_s,
            ops: ops.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn records() -> Vec<RunRecord> {
        let mut steady = RunRecord::new("examples::steady", Verdict::Pass);
        steady.detail = "pass".into();
        steady.topology = "1n1l2c1t".into();
        steady.figures = [("worst_gap_ms".to_string(), 12.5)].into();
        steady.checks = vec![CheckRecord {
            check: "fairness".into(),
            failed: false,
            message: "spread 3%".into(),
            figure: Some(Figure {
                value: 3.0,
                threshold: 25.0,
                unit: "%".into(),
            }),
        }];
        steady.workers = vec![WorkerRecord {
            index: 0,
            group: "cg_0".into(),
            work: "spin".into(),
            unit: "spins".into(),
            progress: 10,
            cpu_time: std::time::Duration::from_secs(2),
            run_delay: std::time::Duration::from_millis(1500),
            ..WorkerRecord::default()
        }];
        steady.phases_s = phases(0.5, 1.0, 6.0, 5.0, 0.1);
        steady.phases_s.total = 12.6;
        steady.monitor = Some(monitor(vec![
            sample(7.0, Some(vec![Some(1), Some(2)]), None, None),
            sample(8.0, Some(vec![Some(3), None]), Some(4), Some("scx_x")),
            sample(9.0, Some(vec![Some(0), Some(0)]), Some(0), None),
        ]));
        steady.steps = vec![
            step(0, 7.5, 9.0, &["add cg_0 (1 worker)"]),
            step(1, 8.25, 10.2, &["stop cg_0"]),
        ];
        steady.verdict_t = Some(12.0);
        let mut bad = RunRecord::new("examples::m::bad", Verdict::Fail);
        bad.preset = Some("llc3".into());
        bad.detail = "gap <1 s> & more".into();
        bad.failure = Some("gap <1 s> & more\nline2\u{1}".into());
        bad.topology = "1n3l2c1t".into();
        bad.phases_s.total = 3.0;
        let mut odd = RunRecord::new("examples::odd", Verdict::Inconclusive);
        odd.detail = "timing".into();
        odd.phases_s.total = 1.0;
        vec![steady, bad, odd]
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
        // A record's kernel names its testcase (the kernel is a dimension).
        let mut recs = records();
        recs[0].kernel = Some(ktstr_record::KernelRecord::new(
            ktstr_record::KernelId {
                release: Some("7.3.4+deb13-cloud-amd64".into()),
                version: ktstr_record::KernelVersion::of_release("7.3.4"),
                source: ktstr_record::KernelSource::Path {
                    path: "/k/vmlinux".into(),
                },
                vmlinux_sha256: "00".into(),
                config_sha256: None,
                config_from: None,
            },
            "/k/vmlinux",
        ));
        let x = junit("run-1", &recs);
        assert!(
            x.contains("classname=\"examples\" name=\"steady@7.3.4\""),
            "{x}"
        );
        assert!(
            x.contains("kernel 7.3.4+deb13-cloud-amd64 scheduler EEVDF"),
            "{x}"
        );
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
        recs[0].host = HostFacts {
            hostname: Some("ci box".into()),
            unix_time: 1_795_772_461,
            ..HostFacts::default()
        };
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
        let mut odd = RunRecord::new("k::a  b\nc", Verdict::Fail);
        odd.detail = "\u{fffe}x".into();
        odd.failure = Some("\u{0}y".into());
        odd.phases_s.total = -3.0;
        odd.host.hostname = Some(String::new());
        let odd = vec![odd];
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
        // (What a typed record cannot hold, a time that is not a number,
        // is NaN here: JSON writes it as null.)
        let mut broken = RunRecord::new("k::x", Verdict::Pass);
        broken.phases_s.body = Some(-1.0);
        broken.phases_s.total = 1.0;
        broken.steps = vec![step(0, -2.0, 0.0, &[]), step(1, 1.0, 0.0, &[])];
        broken.verdict_t = Some(0.5);
        broken.figures = [("a".to_string(), f64::NAN)].into();
        broken.monitor = Some(monitor(vec![sample(f64::NAN, None, None, None)]));
        let broken = vec![broken];
        assert_eq!(
            crate::trace_format::violations(&trace(&broken)),
            Vec::<String>::new()
        );
        // Phases whose float sums round badly (a real run's: the boot began
        // a rounding error inside the slot wait) still lie end to end.
        let mut awkward = RunRecord::new("k::y", Verdict::Pass);
        awkward.phases_s = phases(0.001_003_915, 72.588_984_5, 8.380_282_857, 4.417, 0.09);
        awkward.phases_s.total = 84.3;
        let awkward = vec![awkward];
        assert_eq!(
            crate::trace_format::violations(&trace(&awkward)),
            Vec::<String>::new()
        );
    }

    /// The records of a real run, one failing and two passing two-step
    /// tests: `facade/cargo-ktstr/scripts/report-demo.sh` made them (the
    /// records under `target/ktstr/runs/<run>/` of its package, as a JSON
    /// array, the monitor series thinned to every 4th sample, the host name
    /// replaced). They are of schema 1 from before the typed kernel
    /// identity: they still load.
    fn demo_run() -> Vec<RunRecord> {
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
            let read = recs[pid as usize - 1]
                .monitor
                .iter()
                .flat_map(|m| &m.series)
                .filter(|s| {
                    s.nr_running
                        .as_ref()
                        .is_some_and(|c| c.iter().any(Option::is_some))
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
