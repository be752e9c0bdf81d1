//! A/B comparison of key figures (pure).
//!
//! A difference is a regression only when it passes three gates:
//! - the two-sided exact Mann-Whitney U test (rank-sum; no assumption about
//!   the figures' distribution) gives p below `alpha / k`, Bonferroni's
//!   correction for the `k` figures compared at once;
//! - the medians differ by at least the figure's relative gate;
//! - and by at least its absolute gate;
//!
//! and it goes the figure's worse way. With fewer than 4 runs a side the
//! test cannot reach 0.05 at all; the table says so.

use std::fmt::Write as _;

use crate::select::median;

/// Which way a figure gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Higher is better (work done).
    Higher,
    /// Lower is better (gaps, latencies, spreads).
    Lower,
}

/// A figure the store's records carry and its gates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FigureSpec {
    /// Its key in a record's `figures`.
    pub key: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Smallest relative change of the median that counts (0.10 = 10 %).
    pub rel_gate: f64,
    /// Smallest absolute change of the median that counts, in its unit.
    pub abs_gate: f64,
    /// Its unit, for the table.
    pub unit: &'static str,
}

/// The figures compared by default, with their gates. Work rates and timing
/// figures follow the host's load under software emulation: their gates are
/// wider.
pub const FIGURES: &[FigureSpec] = &[
    // The work CPU-bound workers were let do: steady within a few per cent
    // from run to run, whatever the host's load.
    FigureSpec {
        key: "cpu_share_pct",
        better: Better::Higher,
        rel_gate: 0.05,
        abs_gate: 1.0,
        unit: "%",
    },
    FigureSpec {
        key: "work_per_worker_per_s",
        better: Better::Higher,
        rel_gate: 0.10,
        abs_gate: 1.0,
        unit: "/s",
    },
    FigureSpec {
        key: "worst_gap_ms",
        better: Better::Lower,
        rel_gate: 0.50,
        abs_gate: 20.0,
        unit: "ms",
    },
    FigureSpec {
        key: "wake_p99_us",
        better: Better::Lower,
        rel_gate: 0.50,
        abs_gate: 100.0,
        unit: "us",
    },
    FigureSpec {
        key: "run_delay_pct",
        better: Better::Lower,
        rel_gate: 0.25,
        abs_gate: 5.0,
        unit: "%",
    },
    FigureSpec {
        key: "fairness_spread_pct",
        better: Better::Lower,
        rel_gate: 0.25,
        abs_gate: 5.0,
        unit: "%",
    },
];

/// The spec of figure `key`.
pub fn spec(key: &str) -> Option<&'static FigureSpec> {
    FIGURES.iter().find(|f| f.key == key)
}

/// The two-sided exact p-value of the Mann-Whitney U test of `a` against
/// `b` (ties get half a count; the exact null distribution assumes none).
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 1.0;
    }
    // U of `a`: pairs where a wins, ties counting a half, doubled to stay whole.
    let u2: usize = a
        .iter()
        .map(|x| {
            b.iter()
                .map(|y| match x.total_cmp(y) {
                    std::cmp::Ordering::Greater => 2,
                    std::cmp::Ordering::Equal => 1,
                    std::cmp::Ordering::Less => 0,
                })
                .sum::<usize>()
        })
        .sum();
    let counts = u_distribution(n, m);
    let total: f64 = counts.iter().sum();
    let (lo, hi) = (u2 / 2, u2.div_ceil(2));
    let below: f64 = counts[..=lo].iter().sum::<f64>() / total;
    let above: f64 = counts[hi..].iter().sum::<f64>() / total;
    (2.0 * below.min(above)).min(1.0)
}

/// How many of the C(n+m, n) orderings give each U from 0 to n*m.
fn u_distribution(n: usize, m: usize) -> Vec<f64> {
    // f[i][j][u] over growing samples; rolling in j keeps it small.
    let max = n * m;
    let mut f = vec![vec![vec![0.0f64; max + 1]; m + 1]; n + 1];
    for row in &mut f[0] {
        row[0] = 1.0;
    }
    for i in 1..=n {
        f[i][0][0] = 1.0;
        for j in 1..=m {
            for u in 0..=i * j {
                // The largest value is from `a` (it beats all j of b) or from b.
                let from_a = if u >= j { f[i - 1][j][u - j] } else { 0.0 };
                f[i][j][u] = from_a + f[i][j - 1][u];
            }
        }
    }
    f[n][m].clone()
}

/// The smallest p the test can give with `n` and `m` runs.
pub fn min_p(n: usize, m: usize) -> f64 {
    let counts = u_distribution(n, m);
    let total: f64 = counts.iter().sum();
    (2.0 * counts[0] / total).min(1.0)
}

/// The verdict on one figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The figure.
    pub spec: FigureSpec,
    /// Side A's values and B's.
    pub a: Vec<f64>,
    /// Side B's values.
    pub b: Vec<f64>,
    /// Medians.
    pub med_a: f64,
    /// Median of B.
    pub med_b: f64,
    /// The test's p.
    pub p: f64,
    /// What the gates concluded.
    pub verdict: Verdict,
}

/// What the gates concluded about one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// B is worse beyond noise.
    Regression,
    /// B is better beyond noise.
    Improvement,
    /// Within noise: which gate held it back.
    Same(&'static str),
}

/// Compares each figure present on both sides, with significance level
/// `alpha` shared by all (Bonferroni).
pub fn compare(figures: &[(FigureSpec, Vec<f64>, Vec<f64>)], alpha: f64) -> Vec<Row> {
    let k = figures.len().max(1) as f64;
    figures
        .iter()
        .map(|(spec, a, b)| {
            let (med_a, med_b) = (median(a), median(b));
            let p = mann_whitney_p(a, b);
            let delta = med_b - med_a;
            let rel = if med_a == 0.0 {
                f64::INFINITY
            } else {
                delta.abs() / med_a.abs()
            };
            let worse = match spec.better {
                Better::Higher => delta < 0.0,
                Better::Lower => delta > 0.0,
            };
            let verdict = if p >= alpha / k {
                Verdict::Same("not significant")
            } else if rel < spec.rel_gate {
                Verdict::Same("below the relative gate")
            } else if delta.abs() < spec.abs_gate {
                Verdict::Same("below the absolute gate")
            } else if worse {
                Verdict::Regression
            } else {
                Verdict::Improvement
            };
            Row {
                spec: *spec,
                a: a.clone(),
                b: b.clone(),
                med_a,
                med_b,
                p,
                verdict,
            }
        })
        .collect()
}

/// The comparison as a table.
pub fn table(rows: &[Row], alpha: f64) -> String {
    let mut s = String::new();
    let k = rows.len().max(1);
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>14} {:>8} {:>8}  VERDICT",
        "FIGURE", "A median (n)", "B median (n)", "CHANGE", "p"
    );
    for r in rows {
        let change = if r.med_a == 0.0 {
            "-".to_string()
        } else {
            format!("{:+.1}%", 100.0 * (r.med_b - r.med_a) / r.med_a.abs())
        };
        let verdict = match r.verdict {
            Verdict::Regression => "REGRESSION".to_string(),
            Verdict::Improvement => "improvement".to_string(),
            Verdict::Same(why) => format!("same ({why})"),
        };
        let _ = writeln!(
            s,
            "{:<22} {:>14} {:>14} {:>8} {:>8.4}  {verdict}",
            r.spec.key,
            format!("{:.1}{} ({})", r.med_a, r.spec.unit, r.a.len()),
            format!("{:.1}{} ({})", r.med_b, r.spec.unit, r.b.len()),
            change,
            r.p,
        );
    }
    let _ = writeln!(
        s,
        "test: two-sided exact Mann-Whitney U, p < {alpha}/{k} (Bonferroni over {k} figures), \
         and the change beyond each figure's relative and absolute gate"
    );
    if let Some(r) = rows.first()
        && min_p(r.a.len(), r.b.len()) >= alpha / k as f64
    {
        let _ = writeln!(
            s,
            "warning: with {} and {} runs the test cannot reach p < {:.4}: nothing can count \
             as a regression; use more repetitions (--reps)",
            r.a.len(),
            r.b.len(),
            alpha / k as f64
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_p_values_match_the_tables() {
        // Complete separation, 5 v 5: 2 / C(10,5) = 2/252.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        assert!((mann_whitney_p(&a, &b) - 2.0 / 252.0).abs() < 1e-12);
        assert!((mann_whitney_p(&b, &a) - 2.0 / 252.0).abs() < 1e-12);
        // 3 v 3 can never go below 0.1.
        assert!((min_p(3, 3) - 0.1).abs() < 1e-12);
        // Interleaved: no evidence.
        let p = mann_whitney_p(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0]);
        assert!(p > 0.5, "{p}");
        // Identical samples: p = 1.
        assert_eq!(mann_whitney_p(&[1.0; 5], &[1.0; 5]), 1.0);
        // The distribution sums to C(n+m, n).
        let d = u_distribution(4, 6);
        assert_eq!(d.iter().sum::<f64>(), 210.0);
        assert_eq!(d.len(), 25);
    }

    #[test]
    fn a_regression_needs_all_three_gates() {
        let work = *spec("work_per_worker_per_s").expect("work");
        let a = vec![1000.0, 1010.0, 990.0, 1005.0, 995.0];
        // 40 % less work, clearly separated: a regression.
        let b: Vec<f64> = a.iter().map(|x| x * 0.6).collect();
        let rows = compare(&[(work, a.clone(), b)], 0.05);
        assert_eq!(rows[0].verdict, Verdict::Regression);
        // The same the other way: an improvement, not a regression.
        let b: Vec<f64> = a.iter().map(|x| x * 1.4).collect();
        assert_eq!(
            compare(&[(work, a.clone(), b)], 0.05)[0].verdict,
            Verdict::Improvement
        );
        // Separated but only 3 % worse: below the relative gate.
        let b: Vec<f64> = a.iter().map(|x| x * 0.97 - 20.0).collect();
        assert_eq!(
            compare(&[(work, a.clone(), b)], 0.05)[0].verdict,
            Verdict::Same("below the relative gate")
        );
        // Large but noisy: not significant.
        let b = vec![500.0, 1500.0, 600.0, 1400.0, 990.0];
        assert_eq!(
            compare(&[(work, a.clone(), b)], 0.05)[0].verdict,
            Verdict::Same("not significant")
        );
        // A tiny figure: 50 % worse but under the absolute gate.
        let gap = *spec("worst_gap_ms").expect("gap");
        let rows = compare(
            &[(
                gap,
                vec![2.0, 2.1, 2.2, 2.0, 2.1],
                vec![4.0, 4.1, 4.2, 4.0, 4.1],
            )],
            0.05,
        );
        assert_eq!(rows[0].verdict, Verdict::Same("below the absolute gate"));
        let t = table(&rows, 0.05);
        assert!(
            t.contains("Mann-Whitney") && t.contains("worst_gap_ms"),
            "{t}"
        );
    }

    #[test]
    fn too_few_runs_are_said() {
        let work = *spec("work_per_worker_per_s").expect("work");
        let rows = compare(&[(work, vec![1.0, 2.0, 3.0], vec![7.0, 8.0, 9.0])], 0.05);
        assert!(table(&rows, 0.05).contains("cannot reach"));
    }
}
