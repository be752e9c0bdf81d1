//! What travels between machines in a sharded run (pure): the manifest of a
//! portable archive, the manifest a shard writes next to its results, the
//! libtest name of a record, and the split of tests into shards balanced by
//! expected seconds.
//!
//! `cargo ktstr archive` writes an [`ArchiveManifest`]; `cargo ktstr run
//! --archive` writes a [`ShardManifest`] into the shard's results store when
//! it starts and again when nextest ends; `cargo ktstr merge` reads both to
//! name tests no shard ran, tests two shards ran, and shards that did not
//! finish.

use serde::{Deserialize, Serialize};

use ktstr_record::RunRecord;

/// The version of both manifests' format.
pub const FORMAT: u32 = 1;

/// The name of the archive's manifest, at the archive's root.
pub const ARCHIVE_MANIFEST: &str = "ktstr-archive.json";

/// The name of a shard's manifest, at the root of its results store.
pub const SHARD_MANIFEST: &str = "shard.json";

/// The `cargo-ktstr` that writes and reads these (archives from another
/// version are refused: the records and the test binaries' settings must
/// agree with the reader's).
pub const KTSTR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A kernel packed in an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedKernel {
    /// What tables and shard names call it (`7.3.4`).
    pub label: String,
    /// Its release (`uname -r`), when known.
    pub release: Option<String>,
    /// Its directory inside the archive (`kernels/<label>`).
    pub dir: String,
    /// The SHA-256 of its vmlinux (what records call its identity), when
    /// packed under that name.
    #[serde(default)]
    pub vmlinux_sha256: Option<String>,
}

/// One packed file and its SHA-256, checked after extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedFile {
    /// The path inside the archive.
    pub path: String,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
}

/// A split of the archive's tests into shards, balanced by expected seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The tests (libtest names) of each shard.
    pub shards: Vec<Vec<String>>,
    /// The expected seconds of each shard.
    pub expected_s: Vec<f64>,
}

/// The manifest of a portable archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The `cargo-ktstr` version that made it (and must run it).
    pub ktstr_version: String,
    /// Names this archive: shards of different archives are not merged.
    pub archive_id: String,
    /// The nextest archive inside.
    pub nextest_archive: String,
    /// The cargo-nextest binary inside, when packed.
    pub nextest_binary: Option<String>,
    /// Whether the run includes ignored tests (the gauntlet's variants).
    pub run_ignored: bool,
    /// The workspace's package directories, relative to its root: nextest
    /// runs each test binary in its package's directory, so the stand-in
    /// workspace a shard runs in has them (empty: no source is packed).
    #[serde(default)]
    pub package_dirs: Vec<String>,
    /// The nextest filterset every shard applies (`-E`), if any.
    pub filter: Option<String>,
    /// Every test the shards split, as libtest names.
    pub tests: Vec<String>,
    /// The kernels packed; a shard runs one of them.
    pub kernels: Vec<PackedKernel>,
    /// Every packed file and its hash.
    pub files: Vec<PackedFile>,
    /// A split balanced by expected seconds (`--machines`).
    pub plan: Option<Plan>,
}

impl ArchiveManifest {
    /// The nextest arguments of its filter.
    pub fn filter_args(&self) -> Vec<String> {
        filter_args(self.filter.as_deref())
    }
}

/// `-E FILTER` when there is one.
pub fn filter_args(filter: Option<&str>) -> Vec<String> {
    filter.map_or_else(Vec::new, |f| vec!["-E".to_string(), f.to_string()])
}

/// What a shard ran, written into its results store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The `cargo-ktstr` version that ran it.
    pub ktstr_version: String,
    /// The archive's id.
    pub archive_id: String,
    /// Every test of the archive (what all shards together must run).
    pub archive_tests: Vec<String>,
    /// Every kernel of the archive, by label.
    pub archive_kernels: Vec<String>,
    /// The kernel this shard booted.
    pub kernel: String,
    /// How it was picked: `hash:2/4`, `count:1/3` or `plan:2/3`.
    pub partition: String,
    /// The tests of this shard.
    pub tests: Vec<String>,
    /// The run id its records carry.
    pub run: String,
    /// When it started, Unix seconds.
    pub started_unix: u64,
    /// When nextest ended (`None`: it did not end; the shard was killed).
    pub finished_unix: Option<u64>,
    /// Its wall time, seconds, once ended.
    pub wall_s: Option<f64>,
    /// Whether every test passed, once ended.
    pub passed: Option<bool>,
}

/// The libtest name of the test a record is of: `steady`, or
/// `steady::gauntlet::llc2_smt` for a variant.
pub fn libtest_name(r: &RunRecord) -> String {
    let path = ktstr::results::test_path(&r.test);
    match &r.preset {
        Some(p) => format!("{path}::gauntlet::{}", crate::select::preset_ident(p)),
        None => path.to_string(),
    }
}

/// Splits tests of expected seconds `costs` into `n` shards (indices),
/// longest first onto the least loaded shard, so the shards' sums are
/// balanced (at most 4/3 of the best split's largest). Each shard's indices
/// are sorted; empty shards stay when there are fewer tests than shards.
pub fn balance(costs: &[f64], n: usize) -> Vec<Vec<usize>> {
    let n = n.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut shards = vec![Vec::new(); n];
    let mut load = vec![0.0f64; n];
    for i in order {
        let k = (0..n)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        shards[k].push(i);
        load[k] += costs[i];
    }
    for s in &mut shards {
        s.sort_unstable();
    }
    shards
}

/// The sum of each shard's costs.
pub fn loads(shards: &[Vec<usize>], costs: &[f64]) -> Vec<f64> {
    shards
        .iter()
        .map(|s| s.iter().map(|&i| costs[i]).sum())
        .collect()
}

/// Picks variants so that `n` machines each finish within `budget`: the
/// `fixed` items (tests that always run) and the picked variants, balanced
/// by [`balance`], give no shard more than `budget` seconds when that can
/// be had. The selection covers the most (test, feature) pairs per second
/// first (the one-machine model of [`select`](crate::select::select)) in
/// `n` budgets less the fixed items; while the balanced split overflows,
/// the total shrinks by the overflow. Without a budget every variant goes.
pub fn fit_machines(
    fixed: &[f64],
    variants: &[crate::select::Variant],
    costs: &[f64],
    budget: Option<std::time::Duration>,
    n: usize,
) -> crate::select::Selection {
    let Some(b) = budget else {
        return crate::select::select(variants, costs, None);
    };
    let per = b.as_secs_f64();
    let n = n.max(1);
    let mut total = per * n as f64 - fixed.iter().sum::<f64>();
    loop {
        let room = std::time::Duration::from_secs_f64(total.max(0.0));
        let sel = crate::select::select(variants, costs, Some(room));
        let items: Vec<f64> = fixed
            .iter()
            .copied()
            .chain(sel.order.iter().map(|&i| costs[i]))
            .collect();
        let over = loads(&balance(&items, n), &items)
            .into_iter()
            .fold(0.0f64, f64::max)
            - per;
        if over <= 0.0 || sel.order.is_empty() {
            return sel;
        }
        total -= over.max(0.5);
    }
}

/// Why `--shard` or `--partition` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardArgError {
    /// `--shard` that is not `K/N`.
    #[error("--shard {text:?}: expected K/N with 1 <= K <= N, e.g. 2/{n}")]
    BadShard {
        /// The text as given.
        text: String,
        /// The plan's shards.
        n: usize,
    },
    /// `--shard K/N` with N not the plan's.
    #[error("--shard {text}: the archive's plan has {n} shards (made with --machines {n})")]
    OtherPlan {
        /// The text as given.
        text: String,
        /// The plan's shards.
        n: usize,
    },
    /// `--partition` that is not one of nextest's.
    #[error("--partition {text:?}: expected hash:K/N, count:K/N or slice:K/N, 1 <= K <= N")]
    BadPartition {
        /// The text as given.
        text: String,
    },
}

/// `K/N` of `--shard` (from 1), checked against the plan's `n`.
pub fn parse_shard(text: &str, n: usize) -> Result<usize, ShardArgError> {
    let bad = || ShardArgError::BadShard {
        text: text.to_string(),
        n,
    };
    let (k, total) = text.split_once('/').ok_or_else(bad)?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    let total: usize = total.trim().parse().map_err(|_| bad())?;
    if total != n {
        return Err(ShardArgError::OtherPlan {
            text: text.to_string(),
            n,
        });
    }
    if k == 0 || k > total {
        return Err(bad());
    }
    Ok(k - 1)
}

/// A nextest partition, `hash:K/N`, `count:K/N` or `slice:K/N`, checked.
pub fn check_partition(text: &str) -> Result<(), ShardArgError> {
    let bad = || ShardArgError::BadPartition {
        text: text.to_string(),
    };
    let (kind, kn) = text.split_once(':').ok_or_else(bad)?;
    if !matches!(kind, "hash" | "count" | "slice") {
        return Err(bad());
    }
    let (k, n) = kn.split_once('/').ok_or_else(bad)?;
    match (k.parse::<usize>(), n.parse::<usize>()) {
        (Ok(k), Ok(n)) if k >= 1 && k <= n => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_record::Verdict;

    #[test]
    fn records_name_their_libtest_test() {
        let mut r = RunRecord::new("pkg::steady", Verdict::Pass);
        assert_eq!(libtest_name(&r), "steady");
        r.preset = Some("llc2-smt".into());
        assert_eq!(libtest_name(&r), "steady::gauntlet::llc2_smt");
        let r = RunRecord::new("pkg::m::t", Verdict::Fail);
        assert_eq!(libtest_name(&r), "m::t");
    }

    #[test]
    fn shards_are_balanced_by_seconds_not_count() {
        // One long test and five short ones: by count 3/3 would put the
        // long one with two short ones; by seconds it stands alone.
        let costs = [60.0, 10.0, 10.0, 10.0, 10.0, 10.0];
        let s = balance(&costs, 2);
        assert_eq!(s, vec![vec![0], vec![1, 2, 3, 4, 5]]);
        assert_eq!(loads(&s, &costs), [60.0, 50.0]);
        // Every test once, in some shard.
        let costs: Vec<f64> = (0..31).map(|i| f64::from(i % 7 + 5)).collect();
        let s = balance(&costs, 3);
        let mut all: Vec<usize> = s.concat();
        all.sort_unstable();
        assert_eq!(all, (0..31).collect::<Vec<_>>());
        let l = loads(&s, &costs);
        let mean = l.iter().sum::<f64>() / 3.0;
        let max = l.iter().copied().fold(0.0, f64::max);
        assert!(max <= mean * 1.1, "{l:?}");
        // Fewer tests than shards: empty shards, never a lost test.
        assert_eq!(balance(&[1.0], 3), vec![vec![0], vec![], vec![]]);
        assert_eq!(balance(&[], 0), vec![Vec::<usize>::new()]);
    }

    #[test]
    fn machines_each_fit_the_budget() {
        use crate::select::{parse_variant, preset_ident};
        let v = |t: &str, p: &str| {
            parse_variant(&format!("{t}::gauntlet::{}", preset_ident(p))).expect("variant")
        };
        let vs: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .flat_map(|t| ["tiny", "smt", "llc2", "numa2"].map(|p| v(t, p)))
            .collect();
        let costs: Vec<f64> = (0..vs.len())
            .map(|i| 20.0 + (i % 4) as f64 * 10.0)
            .collect();
        let fixed = [15.0, 15.0];
        let b = std::time::Duration::from_secs(100);
        for n in [1, 2, 3, 8] {
            let sel = fit_machines(&fixed, &vs, &costs, Some(b), n);
            let items: Vec<f64> = fixed
                .iter()
                .copied()
                .chain(sel.order.iter().map(|&i| costs[i]))
                .collect();
            let l = loads(&balance(&items, n), &items);
            assert!(l.iter().all(|&x| x <= 100.0), "n={n}: {l:?}");
            // More machines never pick fewer variants.
            if n > 1 {
                let fewer = fit_machines(&fixed, &vs, &costs, Some(b), n - 1);
                assert!(sel.order.len() >= fewer.order.len(), "n={n}");
            }
        }
        // 8 machines of 100 s hold every variant that covers something new
        // (560 s at most, and the fixed 30 s), as an unlimited budget would.
        let unlimited = crate::select::select(&vs, &costs, Some(b * 100));
        assert_eq!(
            fit_machines(&fixed, &vs, &costs, Some(b), 8).order,
            unlimited.order
        );
        assert_eq!(fit_machines(&fixed, &vs, &costs, None, 2).order.len(), 16);
    }

    #[test]
    fn shard_and_partition_texts_are_checked() {
        assert_eq!(parse_shard("2/3", 3), Ok(1));
        assert!(parse_shard("0/3", 3).is_err());
        assert!(parse_shard("4/3", 3).is_err());
        let e = parse_shard("1/4", 3).expect_err("plan of 3").to_string();
        assert!(e.contains("--machines 3"), "{e}");
        assert!(parse_shard("x", 3).is_err());
        assert!(check_partition("hash:2/4").is_ok());
        assert!(check_partition("count:1/1").is_ok());
        assert!(check_partition("hash:5/4").is_err());
        assert!(check_partition("slice:1/2").is_ok());
        assert!(check_partition("range:1/2").is_err());
        assert!(check_partition("hash:1").is_err());
    }

    #[test]
    fn manifests_round_trip() {
        let m = ShardManifest {
            format: FORMAT,
            ktstr_version: KTSTR_VERSION.into(),
            archive_id: "a1".into(),
            archive_tests: vec!["t".into()],
            archive_kernels: vec!["7.0.13".into()],
            kernel: "7.0.13".into(),
            partition: "hash:1/2".into(),
            tests: vec!["t".into()],
            run: "r".into(),
            started_unix: 1,
            finished_unix: None,
            wall_s: None,
            passed: None,
        };
        let text = serde_json::to_string(&m).expect("serializes");
        let back: ShardManifest = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, m);
    }
}
