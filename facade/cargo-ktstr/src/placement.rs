//! `stats compare`'s placement section: how each side's workers were split
//! over NUMA nodes, LLCs and cores, and where the split changed.

use std::collections::BTreeMap;

use ktstr_record::{Level, RunRecord};

/// One cgroup's split at one level on both sides: the most common split of
/// each side's runs, with how many runs had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRow {
    /// The cgroup.
    pub group: String,
    /// The level.
    pub level: Level,
    /// Side A's most common split, runs with it and runs in all (`None`:
    /// no run of A has this cgroup at this level).
    pub a: Option<(String, usize, usize)>,
    /// Side B's.
    pub b: Option<(String, usize, usize)>,
}

impl PlacementRow {
    /// Whether the sides' most common splits differ.
    pub fn changed(&self) -> bool {
        self.a.as_ref().map(|a| &a.0) != self.b.as_ref().map(|b| &b.0)
    }
}

/// Per cgroup and level, the most common split (workers per domain) of
/// each side's records.
fn splits(records: &[RunRecord]) -> BTreeMap<(String, Level), (String, usize, usize)> {
    let mut counts: BTreeMap<(String, Level), BTreeMap<String, usize>> = BTreeMap::new();
    for r in records {
        for g in &r.placement {
            for l in &g.levels {
                *counts
                    .entry((g.group.clone(), l.level))
                    .or_default()
                    .entry(l.counts())
                    .or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|(k, by)| {
            let total = by.values().sum();
            let (split, n) = by
                .into_iter()
                .max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0)))
                .unwrap_or_default();
            (k, (split, n, total))
        })
        .collect()
}

/// Both sides' splits, row by row (empty: neither side has placement).
pub fn compare(a: &[RunRecord], b: &[RunRecord]) -> Vec<PlacementRow> {
    let (mut sa, mut sb) = (splits(a), splits(b));
    let keys: std::collections::BTreeSet<(String, Level)> =
        sa.keys().chain(sb.keys()).cloned().collect();
    keys.into_iter()
        .map(|k| PlacementRow {
            a: sa.remove(&k),
            b: sb.remove(&k),
            group: k.0,
            level: k.1,
        })
        .collect()
}

/// The rows as text, changed ones marked.
pub fn table(rows: &[PlacementRow]) -> String {
    let side = |s: &Option<(String, usize, usize)>| match s {
        Some((split, n, total)) => format!("{split} ({n} of {total} runs)"),
        None => "-".to_string(),
    };
    let mut out = String::from("placement (workers per domain, each side's most common split):\n");
    for r in rows {
        let mark = if r.changed() { "CHANGED" } else { "same" };
        out.push_str(&format!(
            "  {} by {}: {mark}\n    A: {}\n    B: {}\n",
            r.group,
            r.level,
            side(&r.a),
            side(&r.b)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ktstr_record::{DomainShare, GroupPlacement, LevelSplit, Verdict};

    use super::*;

    fn record(node0: &[usize], node1: &[usize]) -> RunRecord {
        let share = |domain, workers: &[usize]| DomainShare {
            domain,
            cpus: 2,
            workers: workers.to_vec(),
            cpu_time_min: Duration::from_secs(1),
            cpu_time_max: Duration::from_secs(2),
            cpu_time_mean: Duration::from_millis(1500),
        };
        let mut r = RunRecord::new("t::steady", Verdict::Pass);
        r.placement = vec![GroupPlacement {
            group: "cg_0".into(),
            levels: vec![LevelSplit {
                level: Level::Node,
                domains: vec![share(0, node0), share(1, node1)],
                homeless: vec![],
                moves: 0,
                stable_for: Duration::from_secs(5),
                window: Duration::from_secs(5),
            }],
        }];
        r
    }

    #[test]
    fn a_changed_split_is_marked_with_each_sides_majority() {
        let a = [record(&[0, 1], &[2, 3]), record(&[0, 1], &[2, 3])];
        let b = [
            record(&[0, 1, 2], &[3]),
            record(&[0, 1, 2], &[3]),
            record(&[0, 1], &[2, 3]),
        ];
        let rows = compare(&a, &b);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].changed());
        let t = table(&rows);
        assert!(
            t.contains(
                "cg_0 by node: CHANGED\n    A: node 0: 2, node 1: 2 (2 of 2 runs)\n    B: node 0: \
                 3, node 1: 1 (2 of 3 runs)"
            ),
            "{t}"
        );
        assert!(!compare(&a, &a)[0].changed());
        assert!(compare(&[], &[]).is_empty());
    }
}
