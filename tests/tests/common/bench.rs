//! Helpers of the benchmark tests (`cargo xtask bench restore`, `record`).

/// Timed runs of a benchmark: `KTSTR_BENCH_RUNS` (the xtask's `--runs`),
/// else `default`; at least one.
pub fn runs(default: usize) -> usize {
    std::env::var("KTSTR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
