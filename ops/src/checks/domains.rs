//! Placement by topology: per cgroup, how many workers lived on each NUMA
//! node, LLC and core, what CPU time they got there, and whether that split
//! changed during the run ([`placement`]); and, for a fairness failure,
//! whether a domain carrying more workers per CPU than another explains it
//! ([`explain_spread`]).
//!
//! Everything comes from the workers' [`PlacementTrace`]s (per time bin,
//! the CPU a worker's loop saw most) and the declared topology, which maps
//! Linux CPU ids to nodes, LLCs and cores.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ktstr_topology::Topology;
use serde::{Deserialize, Serialize};

use crate::workload::{PlacementTrace, WorkerReport};

/// Check name of the placement notes.
pub const PLACEMENT: &str = "placement";

/// A worker's home is the domain that holds at least this share of its rounds.
const HOME_SHARE: f64 = 0.5;
/// A domain explains a spread when its workers per CPU exceed another's by
/// this factor (and it is contended: more than one worker per CPU).
const IMBALANCE: f64 = 1.25;

/// A level of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// NUMA node.
    Node,
    /// Last-level cache, numbered across the VM.
    Llc,
    /// Core, numbered across the VM (SMT siblings share it).
    Core,
}

impl Level {
    fn of(self, topo: &Topology, cpu: u32) -> Option<u32> {
        let c = topo.cpu(cpu)?;
        Some(match self {
            Level::Node => c.node,
            Level::Llc => c.llc,
            Level::Core => c.llc * topo.cores_per_llc() + c.core,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Node => "node",
            Level::Llc => "LLC",
            Level::Core => "core",
        })
    }
}

/// The workers of one cgroup that lived in one domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainShare {
    /// The domain's id at its level.
    pub domain: u32,
    /// CPUs in the domain.
    pub cpus: u32,
    /// Workers whose home it was (the indices, in the scenario's order).
    pub workers: Vec<usize>,
    /// Those workers' least CPU time.
    pub cpu_time_min: Duration,
    /// Their most.
    pub cpu_time_max: Duration,
    /// Their mean.
    pub cpu_time_mean: Duration,
}

/// One cgroup's split at one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSplit {
    /// The level.
    pub level: Level,
    /// The domains some worker called home, by id.
    pub domains: Vec<DomainShare>,
    /// Workers with no home at this level (no domain held half their rounds).
    pub homeless: Vec<usize>,
    /// Times a worker's busiest domain changed from one time bin to the next.
    pub moves: u32,
    /// How long the split had held at the end of the window (the whole
    /// window when nothing moved).
    pub stable_for: Duration,
    /// The window: the longest of the workers'.
    pub window: Duration,
}

/// One cgroup's placement at every level where the topology has more than
/// one domain (a level that only repeats the one above is left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlacement {
    /// The cgroup.
    pub group: String,
    /// Its split per level, coarsest first.
    pub levels: Vec<LevelSplit>,
}

/// The levels worth showing for `topo`: more than one domain, and not the
/// same partition as the level above.
pub fn levels(topo: &Topology) -> Vec<Level> {
    let mut out = Vec::new();
    let mut above = 1;
    for (level, n) in [
        (Level::Node, topo.numa_nodes()),
        (Level::Llc, topo.llcs()),
        (Level::Core, topo.llcs() * topo.cores_per_llc()),
    ] {
        if n > above {
            out.push(level);
            above = n;
        }
    }
    out
}

/// The rounds a trace spent in each domain of `level`.
fn rounds_by_domain(t: &PlacementTrace, topo: &Topology, level: Level) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for (cpu, r) in t.cpu.iter().zip(&t.rounds) {
        if let Some(d) = cpu.and_then(|c| level.of(topo, c)) {
            *m.entry(d).or_default() += r;
        }
    }
    m
}

/// The domain holding at least [`HOME_SHARE`] of the trace's rounds.
fn home(t: &PlacementTrace, topo: &Topology, level: Level) -> Option<u32> {
    let by = rounds_by_domain(t, topo, level);
    let total: u64 = by.values().sum();
    let (&d, &r) = by.iter().max_by_key(|e| *e.1)?;
    (total > 0 && r as f64 >= HOME_SHARE * total as f64).then_some(d)
}

/// Domain changes between consecutive bins the worker was seen in, and when
/// the last one happened (from the release).
fn moves(t: &PlacementTrace, topo: &Topology, level: Level) -> (u32, Option<Duration>) {
    let mut last = None;
    let mut n = 0;
    let mut at = None;
    for (i, cpu) in t.cpu.iter().enumerate() {
        let Some(d) = cpu.and_then(|c| level.of(topo, c)) else {
            continue;
        };
        if last.is_some_and(|l| l != d) {
            n += 1;
            at = Some(t.bin * i as u32);
        }
        last = Some(d);
    }
    (n, at)
}

fn cpus_in(topo: &Topology, level: Level, domain: u32) -> u32 {
    topo.cpus()
        .filter(|c| level.of(topo, c.cpu) == Some(domain))
        .count() as u32
}

fn split(workers: &[&WorkerReport], topo: &Topology, level: Level) -> LevelSplit {
    let mut homes: BTreeMap<u32, Vec<&WorkerReport>> = BTreeMap::new();
    let mut homeless = Vec::new();
    let (mut n_moves, mut last_move) = (0, Duration::ZERO);
    let window = workers.iter().map(|w| w.wall).max().unwrap_or_default();
    for w in workers {
        let Some(t) = &w.trace else {
            homeless.push(w.index);
            continue;
        };
        match home(t, topo, level) {
            Some(d) => homes.entry(d).or_default().push(w),
            None => homeless.push(w.index),
        }
        let (n, at) = moves(t, topo, level);
        n_moves += n;
        last_move = last_move.max(at.unwrap_or_default());
    }
    let domains = homes
        .into_iter()
        .map(|(domain, ws)| {
            let times: Vec<Duration> = ws.iter().map(|w| w.cpu_time).collect();
            DomainShare {
                domain,
                cpus: cpus_in(topo, level, domain),
                workers: ws.iter().map(|w| w.index).collect(),
                cpu_time_min: times.iter().copied().min().unwrap_or_default(),
                cpu_time_max: times.iter().copied().max().unwrap_or_default(),
                cpu_time_mean: times.iter().sum::<Duration>() / times.len().max(1) as u32,
            }
        })
        .collect();
    LevelSplit {
        level,
        domains,
        homeless,
        moves: n_moves,
        stable_for: window.saturating_sub(last_move),
        window,
    }
}

/// Every cgroup's placement at every level [`levels`] shows. Workers
/// without a trace count as homeless.
pub fn placement(reports: &[WorkerReport], topo: &Topology) -> Vec<GroupPlacement> {
    let mut groups: BTreeMap<&str, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports {
        groups.entry(r.group.as_str()).or_default().push(r);
    }
    let levels = levels(topo);
    groups
        .into_iter()
        .map(|(group, ws)| GroupPlacement {
            group: group.to_string(),
            levels: levels.iter().map(|&l| split(&ws, topo, l)).collect(),
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl fmt::Display for LevelSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for d in &self.domains {
            let n = d.workers.len();
            let time = if d.cpu_time_max.saturating_sub(d.cpu_time_min) < Duration::from_millis(50)
            {
                format!("{} each", secs(d.cpu_time_mean))
            } else {
                format!(
                    "{:.2}–{:.2} s",
                    d.cpu_time_min.as_secs_f64(),
                    d.cpu_time_max.as_secs_f64()
                )
            };
            let s = if n == 1 { "" } else { "s" };
            let cs = if d.cpus == 1 { "" } else { "s" };
            parts.push(format!(
                "{} {} ({} CPU{cs}): {n} worker{s}, {time}",
                self.level, d.domain, d.cpus
            ));
        }
        if !self.homeless.is_empty() {
            parts.push(format!(
                "{} worker(s) spread over {}s",
                self.homeless.len(),
                self.level
            ));
        }
        let stable = if self.moves == 0 {
            format!("unchanged for the whole {}", secs(self.window))
        } else {
            format!(
                "{} move(s) between {}s, then unchanged for {}",
                self.moves,
                self.level,
                secs(self.stable_for)
            )
        };
        write!(f, "{}; {stable}", parts.join("; "))
    }
}

impl fmt::Display for GroupPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.levels.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{} by {}: {l}", self.group, l.level)?;
        }
        Ok(())
    }
}

/// The CPUs a worker may use: its pinned mask, else its cpuset, else all.
fn allowed(r: &WorkerReport, cpu: u32) -> bool {
    match (&r.affinity, &r.cpuset) {
        (Some(a), _) => a.contains(cpu),
        (None, Some(s)) => s.contains(cpu),
        (None, None) => true,
    }
}

/// Why the workers `lo` and `hi` of one equal-weight group got such
/// different CPU time, if placement says: at the coarsest level where
/// `lo`'s home domain carried more CPU-bound workers per CPU than `hi`'s
/// (counting every cgroup's, in fractions of their rounds), by at least
/// 25%, on a contended domain. `None` when placement does not
/// explain it (or the workers have no traces).
pub fn explain_spread(
    reports: &[WorkerReport],
    lo: &WorkerReport,
    hi: &WorkerReport,
    topo: &Topology,
) -> Option<String> {
    let (tlo, thi) = (lo.trace.as_ref()?, hi.trace.as_ref()?);
    for level in levels(topo) {
        let (Some(dlo), Some(dhi)) = (home(tlo, topo, level), home(thi, topo, level)) else {
            continue;
        };
        if dlo == dhi {
            continue;
        }
        // Workers resident per domain: each CPU-bound worker counts in every
        // domain by its share of rounds there.
        let mut load: BTreeMap<u32, f64> = BTreeMap::new();
        let mut stable = Duration::MAX;
        for r in reports.iter().filter(|r| r.cpu_bound && !r.noise) {
            let Some(t) = &r.trace else { continue };
            let by = rounds_by_domain(t, topo, level);
            let total: u64 = by.values().sum();
            if total == 0 {
                continue;
            }
            for (d, n) in by {
                *load.entry(d).or_default() += n as f64 / total as f64;
            }
            let (_, at) = moves(t, topo, level);
            stable = stable.min(r.wall.saturating_sub(at.unwrap_or_default()));
        }
        // CPUs of each domain the slower worker's group may use.
        let usable = |d: u32| {
            topo.cpus()
                .filter(|c| level.of(topo, c.cpu) == Some(d) && allowed(lo, c.cpu))
                .count()
        };
        let (clo, chi) = (usable(dlo), usable(dhi));
        if clo == 0 || chi == 0 {
            continue;
        }
        let (llo, lhi) = (load.get(&dlo).copied()?, load.get(&dhi).copied()?);
        let (plo, phi) = (llo / clo as f64, lhi / chi as f64);
        if plo > 1.0 && plo >= IMBALANCE * phi {
            return Some(format!(
                "explained by placement: {level} {dlo} carried {llo:.1} CPU-bound workers on {clo} \
                 CPUs ({plo:.1} per CPU), {level} {dhi} {lhi:.1} on {chi} ({phi:.1} per CPU); \
                 worker {} lived on {level} {dlo} and got {:.2?}, worker {} on {level} {dhi} got \
                 {:.2?}; the split held for the last {}",
                lo.index,
                lo.cpu_time,
                hi.index,
                hi.cpu_time,
                secs(stable.min(lo.wall.max(hi.wall)))
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests;
