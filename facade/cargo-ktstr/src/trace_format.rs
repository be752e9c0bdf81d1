//! A strict check of Chrome trace-event JSON (tests only): the rules of the
//! Trace Event Format that Perfetto's UI and `chrome://tracing` import,
//! for the phases ktstr writes, held strictly.
//!
//! - The document is an object with a `traceEvents` array
//!   (`displayTimeUnit`, when present, is `ms` or `ns`).
//! - Every event is an object with a non-empty string `name` (an `E` may
//!   leave it out), `ph` one of `X B E C M i I`, and `pid` and `tid`
//!   non-negative integers; `cat`, when present, a string; `args` an object.
//! - All but metadata (`M`) have `ts`, a finite non-negative number of
//!   microseconds; `X` a `dur` likewise.
//! - `M` events are `process_name` or `thread_name` with a string
//!   `args.name`, or `process_sort_index` / `thread_sort_index` with an
//!   integer `args.sort_index`.
//! - `C` events have a non-empty `args` of finite numbers only.
//! - Instants (`i`, `I`) have a scope `s` of `g`, `p` or `t`, if any.
//! - On each track (`pid`, `tid`) the events come in time order; `B` and
//!   `E` pair up (an `E` never without an open `B`, none left open); slices
//!   nest, never overlap partly. Each counter series (`pid`, `name`) comes
//!   in time order.

use std::collections::HashMap;

use serde_json::Value;

fn uint(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn time(v: &Value) -> Option<f64> {
    v.as_f64().filter(|t| t.is_finite() && *t >= 0.0)
}

/// One open slice on a track: (name, end; `None` for a `B` until its `E`).
type Open = (String, Option<f64>);

#[derive(Default)]
struct Track {
    last_ts: f64,
    open: Vec<Open>,
}

impl Track {
    /// Closes the `X` slices that ended by `ts`.
    fn close_until(&mut self, ts: f64) {
        while let Some((_, Some(end))) = self.open.last() {
            if *end <= ts {
                self.open.pop();
            } else {
                break;
            }
        }
    }
}

/// What breaks the Trace Event Format in `doc` (empty: it conforms).
pub fn violations(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(events) = doc["traceEvents"].as_array() else {
        return vec!["no traceEvents array".into()];
    };
    if let Some(u) = doc.get("displayTimeUnit")
        && u != "ms"
        && u != "ns"
    {
        out.push(format!("displayTimeUnit {u} is neither \"ms\" nor \"ns\""));
    }
    let mut tracks: HashMap<(u64, u64), Track> = HashMap::new();
    let mut counters: HashMap<(u64, String), f64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let mut bad = |what: String| out.push(format!("event {i} {e}: {what}"));
        if !e.is_object() {
            bad("not an object".into());
            continue;
        }
        let ph = e["ph"].as_str().unwrap_or("");
        if !["X", "B", "E", "C", "M", "i", "I"].contains(&ph) {
            bad(format!("phase {:?} is not one of X B E C M i I", e["ph"]));
            continue;
        }
        let name = e["name"].as_str().unwrap_or("");
        if name.is_empty() && ph != "E" {
            bad("no name".into());
        }
        let (Some(pid), Some(tid)) = (uint(&e["pid"]), uint(&e["tid"])) else {
            bad("pid and tid must be non-negative integers".into());
            continue;
        };
        if e.get("cat").is_some_and(|c| !c.is_string()) {
            bad("cat is not a string".into());
        }
        if e.get("args").is_some_and(|a| !a.is_object()) {
            bad("args is not an object".into());
        }
        if ph == "M" {
            match name {
                "process_name" | "thread_name" if e["args"]["name"].is_string() => {}
                "process_sort_index" | "thread_sort_index" if e["args"]["sort_index"].is_i64() => {}
                _ => bad("metadata is not a process/thread name or sort index with its arg".into()),
            }
            continue;
        }
        let Some(ts) = time(&e["ts"]) else {
            bad("ts is not a finite non-negative number".into());
            continue;
        };
        let track = tracks.entry((pid, tid)).or_default();
        if ts < track.last_ts {
            bad(format!(
                "ts {ts} before the track's previous event at {}",
                track.last_ts
            ));
        }
        track.last_ts = track.last_ts.max(ts);
        track.close_until(ts);
        match ph {
            "X" => {
                let Some(dur) = time(&e["dur"]) else {
                    bad("a complete slice needs a finite non-negative dur".into());
                    continue;
                };
                let end = ts + dur;
                // The enclosing slice must hold this one whole.
                if let Some((outer, Some(outer_end))) = track.open.last()
                    && end > *outer_end + 1e-6
                {
                    bad(format!(
                        "ends at {end}, after the slice {outer:?} it starts in (ends {outer_end})"
                    ));
                }
                track.open.push((name.to_string(), Some(end)));
            }
            "B" => track.open.push((name.to_string(), None)),
            "E" => match track.open.pop() {
                Some((_, None)) => {}
                Some((n, Some(_))) => bad(format!("E inside the complete slice {n:?}")),
                None => bad("E without an open B".into()),
            },
            "C" => {
                let args = e["args"].as_object();
                if args.is_none_or(|a| {
                    a.is_empty() || a.values().any(|v| !v.as_f64().is_some_and(f64::is_finite))
                }) {
                    bad("a counter's args must be finite numbers, at least one".into());
                }
                let last = counters.entry((pid, name.to_string())).or_insert(ts);
                if ts < *last {
                    bad(format!(
                        "counter sample at {ts} before its previous at {last}"
                    ));
                }
                *last = last.max(ts);
            }
            _ => {
                if let Some(s) = e.get("s")
                    && !["g", "p", "t"].iter().any(|k| s == k)
                {
                    bad(format!("instant scope {s} is not g, p or t"));
                }
            }
        }
    }
    for ((pid, tid), t) in &tracks {
        for (name, end) in &t.open {
            if end.is_none() {
                out.push(format!("pid {pid} tid {tid}: B {name:?} never ends"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"displayTimeUnit": "ms", "traceEvents": [
            {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "t"}},
            {"ph": "X", "name": "outer", "pid": 1, "tid": 0, "ts": 0, "dur": 10},
            {"ph": "X", "name": "inner", "pid": 1, "tid": 0, "ts": 2, "dur": 3},
            {"ph": "B", "name": "b", "pid": 1, "tid": 0, "ts": 6},
            {"ph": "E", "pid": 1, "tid": 0, "ts": 7},
            {"ph": "i", "name": "now", "pid": 1, "tid": 0, "ts": 8, "s": "p"},
            {"ph": "C", "name": "n", "pid": 1, "tid": 0, "ts": 9, "args": {"cpu0": 1}},
            {"ph": "X", "name": "next", "pid": 1, "tid": 0, "ts": 10, "dur": 1}
        ]})
    }

    #[test]
    fn a_conforming_trace_passes() {
        assert_eq!(violations(&good()), Vec::<String>::new());
    }

    /// The twin of the check: each broken rule is caught and named.
    #[test]
    fn each_broken_rule_is_caught_and_named() {
        let cases: [(usize, &str, Value, &str); 14] = [
            (1, "ph", json!("Q"), "is not one of"),
            (1, "pid", json!(-1), "pid and tid"),
            (1, "tid", Value::Null, "pid and tid"),
            (1, "ts", json!(-5), "ts is not"),
            (1, "dur", json!(f64::NAN), "needs a finite"),
            (1, "name", json!(""), "no name"),
            (0, "args", json!({"title": "t"}), "metadata"),
            (6, "args", json!({"cpu0": null}), "finite numbers"),
            (6, "args", json!({}), "finite numbers"),
            (5, "s", json!("x"), "instant scope"),
            (2, "dur", json!(9), "after the slice \"outer\""),
            (7, "ts", json!(1), "before the track's previous event"),
            (4, "ph", json!("B"), "never ends"),
            (3, "ph", json!("E"), "E inside the complete slice \"outer\""),
        ];
        for (at, key, value, want) in cases {
            let mut doc = good();
            doc["traceEvents"][at][key] = value.clone();
            let v = violations(&doc);
            assert!(
                v.iter().any(|m| m.contains(want)),
                "event {at} {key} = {value}: expected {want:?}, got {v:#?}"
            );
        }
        assert_eq!(violations(&json!({"events": []})), ["no traceEvents array"]);
        let mut doc = good();
        doc["displayTimeUnit"] = json!("s");
        assert!(violations(&doc)[0].contains("displayTimeUnit"));
    }
}
