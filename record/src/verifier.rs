//! The BPF verifier's cost of a scheduler's programs, per kernel, and the baseline gate
//! `cargo ktstr verifier` applies: a program whose processed instructions grew past its
//! threshold (default 10%), or that comes within 10% of the kernel's limit, fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The verifier's complexity limit: instructions processed per program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, `include/linux/bpf.h`, since Linux 5.2).
pub const COMPLEXITY_LIMIT: u64 = 1_000_000;
/// Growth over the baseline that fails the gate, percent, unless a program says otherwise.
pub const DEFAULT_GROWTH_PCT: f64 = 10.0;
/// How close to [`COMPLEXITY_LIMIT`] a program may come, percent of it.
pub const LIMIT_MARGIN_PCT: f64 = 10.0;

/// One loaded program as the kernel reported it after attaching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgStats {
    /// Its name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// `enum bpf_prog_type` (27: struct_ops).
    pub prog_type: u32,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`).
    pub verified_insns: u64,
    /// The verified program's size, instructions.
    pub xlated_insns: u64,
    /// The JIT-compiled size, bytes.
    pub jited_bytes: u64,
    /// States the verifier explored (`env->total_states`, read by the guest's verifier
    /// probe; `None`: not read, e.g. a kernel whose BTF lacks the fields).
    #[serde(default)]
    pub states: Option<u64>,
    /// Most states the verifier kept at once (`env->peak_states`; as `states`).
    #[serde(default)]
    pub peak_states: Option<u64>,
    /// The verifier's own duration for this program (`env->verification_time`), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ms: Option<f64>,
    /// From this program's load to the next one's, ms (verification and JIT of it; `None`
    /// for the last program loaded).
    #[serde(default)]
    pub load_ms: Option<f64>,
}

impl ProgStats {
    /// What [`ProgStats::cells`] holds, in order.
    pub const COLUMNS: [&'static str; 7] = [
        "insns processed",
        "states",
        "peak states",
        "verified size (insns)",
        "JIT bytes",
        "verify ms",
        "load ms",
    ];

    /// The figures as text, in the order of [`ProgStats::COLUMNS`]; `-` where unknown.
    pub fn cells(&self) -> [String; 7] {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        [
            self.verified_insns.to_string(),
            opt(self.states),
            opt(self.peak_states),
            self.xlated_insns.to_string(),
            self.jited_bytes.to_string(),
            ms(self.verify_ms),
            ms(self.load_ms),
        ]
    }
}

/// A baseline file: per scheduler and program, the processed instructions accepted, and
/// optionally the growth allowed. JSON:
/// `{"programs": {"scx-ktstr/ktstr_enqueue": {"insns": 120, "max_growth_pct": 25.0}}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// `<scheduler>/<program>` (with `@<kernel>` when figures differ per kernel) to entry.
    pub programs: BTreeMap<String, BaselineEntry>,
}

/// One program's accepted cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineEntry {
    /// Instructions processed.
    pub insns: u64,
    /// Growth allowed, percent (`None`: [`DEFAULT_GROWTH_PCT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_growth_pct: Option<f64>,
}

/// A program the gate fails, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct GateFailure {
    /// The baseline key (`scx-ktstr/ktstr_enqueue@6.18.15`).
    pub key: String,
    /// The sentence.
    pub why: String,
}

/// Checks measured programs (`key` to processed instructions) against `baseline`.
/// Programs missing from the baseline are only checked against the limit.
pub fn gate(measured: &BTreeMap<String, u64>, baseline: &Baseline) -> Vec<GateFailure> {
    let mut out = Vec::new();
    for (key, &insns) in measured {
        let near = COMPLEXITY_LIMIT as f64 * (1.0 - LIMIT_MARGIN_PCT / 100.0);
        if insns as f64 >= near {
            out.push(GateFailure {
                key: key.clone(),
                why: format!(
                    "{insns} instructions processed is within {LIMIT_MARGIN_PCT}% of the \
                     verifier's limit of {COMPLEXITY_LIMIT}"
                ),
            });
        }
        let Some(base) = lookup(baseline, key) else {
            continue;
        };
        let allowed = base.max_growth_pct.unwrap_or(DEFAULT_GROWTH_PCT);
        let growth = if base.insns == 0 {
            if insns == 0 { 0.0 } else { f64::INFINITY }
        } else {
            (insns as f64 / base.insns as f64 - 1.0) * 100.0
        };
        // A hair over: 110 of 100 is 10.000000000000009% in floating point.
        if growth > allowed + 1e-9 {
            out.push(GateFailure {
                key: key.clone(),
                why: format!(
                    "{insns} instructions processed, {} in the baseline: +{growth:.1}%, over \
                     the {allowed}% allowed",
                    base.insns
                ),
            });
        }
    }
    out
}

/// The baseline entry of `key` (`sched/prog@kernel`), else of `sched/prog` (one entry for
/// every kernel).
fn lookup<'b>(baseline: &'b Baseline, key: &str) -> Option<&'b BaselineEntry> {
    baseline.programs.get(key).or_else(|| {
        let plain = key.split('@').next()?;
        baseline.programs.get(plain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(entries: &[(&str, u64, Option<f64>)]) -> Baseline {
        Baseline {
            programs: entries
                .iter()
                .map(|(k, insns, pct)| {
                    (
                        (*k).to_string(),
                        BaselineEntry {
                            insns: *insns,
                            max_growth_pct: *pct,
                        },
                    )
                })
                .collect(),
        }
    }

    fn measured(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect()
    }

    #[test]
    fn growth_past_ten_percent_fails_naming_program_and_growth() {
        let b = base(&[("s/enq", 100, None), ("s/disp", 100, None)]);
        let f = gate(&measured(&[("s/enq@6.18", 110), ("s/disp@6.18", 131)]), &b);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].key, "s/disp@6.18");
        assert!(f[0].why.contains("+31.0%"), "{}", f[0].why);
    }

    #[test]
    fn a_per_program_threshold_and_a_per_kernel_entry_win() {
        let b = base(&[("s/enq", 100, Some(50.0)), ("s/disp@7.1", 200, None)]);
        let f = gate(&measured(&[("s/enq@6.18", 140), ("s/disp@7.1", 210)]), &b);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn coming_near_the_kernel_s_limit_fails_without_a_baseline() {
        let f = gate(&measured(&[("s/big@7.1", 950_000)]), &Baseline::default());
        assert_eq!(f.len(), 1);
        assert!(f[0].why.contains("limit of 1000000"), "{}", f[0].why);
    }

    #[test]
    fn a_baseline_round_trips_and_omits_default_thresholds() {
        let b = base(&[("s/enq", 100, None)]);
        let text = serde_json::to_string(&b).expect("serializes");
        assert_eq!(text, r#"{"programs":{"s/enq":{"insns":100}}}"#);
        assert_eq!(serde_json::from_str::<Baseline>(&text).expect("reads"), b);
    }
}
