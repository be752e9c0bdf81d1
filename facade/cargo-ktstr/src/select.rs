//! The gauntlet's variants and budget-aware selection (pure).
//!
//! A variant is a `#[ktstr_test]` on one topology preset. libtest names it
//! `<test>::gauntlet::<preset ident>`; reports name it
//! `gauntlet/<test>/<preset>`. Selection is greedy weighted set cover: the
//! (test, shape feature) pairs are the universe, each variant covers its
//! test's pairs for its preset's features and costs its expected seconds;
//! the variant with the most new pairs per expected second is picked while
//! one fits in what is left of the budget.

use std::collections::BTreeSet;
use std::time::Duration;

use ktstr_topology::{PRESETS, Preset, ShapeFeature};

/// One gauntlet variant of a test binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// libtest's name: `<test>::gauntlet::<ident>`.
    pub libtest: String,
    /// The test's libtest path (`steady`, `module::steady`).
    pub test: String,
    /// The preset.
    pub preset: &'static Preset,
}

impl Variant {
    /// `gauntlet/<test>/<preset>`.
    pub fn name(&self) -> String {
        format!("gauntlet/{}/{}", self.test, self.preset.name)
    }

    /// The shape features of its preset.
    pub fn features(&self) -> Vec<ShapeFeature> {
        ShapeFeature::ALL
            .into_iter()
            .filter(|f| f.of(&self.preset.topology))
            .collect()
    }

    /// Whether `filter` names it: a substring of either name.
    pub fn matches(&self, filter: &str) -> bool {
        self.libtest.contains(filter) || self.name().contains(filter)
    }
}

/// The identifier a preset's variant function has (`llc2-smt` -> `llc2_smt`).
pub fn preset_ident(name: &str) -> String {
    name.replace(['-', '.'], "_")
}

/// The variant a libtest name denotes, if it is one.
pub fn parse_variant(libtest: &str) -> Option<Variant> {
    let (test, ident) = libtest.rsplit_once("::gauntlet::")?;
    let preset = PRESETS.iter().find(|p| preset_ident(p.name) == ident)?;
    Some(Variant {
        libtest: libtest.to_string(),
        test: test.to_string(),
        preset,
    })
}

/// The variants among the lines of `cargo test -- --list --ignored`
/// (`name: test`), deduplicated and sorted.
pub fn variants_in_listing(listing: &str) -> Vec<Variant> {
    let names: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.trim().strip_suffix(": test"))
        .collect();
    names.into_iter().filter_map(parse_variant).collect()
}

/// Where an expected duration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostSource {
    /// The median of this many recorded runs of the variant.
    History(usize),
    /// The fixed model (no recorded run of the variant).
    Model,
}

/// The fixed model of a variant's wall time when nothing was recorded:
/// 6 s to boot a 2-vCPU guest under software emulation, 0.4 s more per
/// further vCPU (ENVIRONMENT.md: 1 vCPU 6.6 s ... 8 vCPUs 9.5 s), the
/// body, and 4 s to build the initramfs and tear down.
pub fn model_seconds(preset: &Preset, duration_s: u32) -> f64 {
    let extra_cpus = preset.topology.nr_cpus().saturating_sub(2);
    6.0 + 0.4 * f64::from(extra_cpus) + f64::from(duration_s) + 4.0
}

/// The expected seconds of a variant: the median of recorded durations,
/// else the model.
pub fn expected_seconds(recorded: &[f64], preset: &Preset, duration_s: u32) -> (f64, CostSource) {
    if recorded.is_empty() {
        return (model_seconds(preset, duration_s), CostSource::Model);
    }
    (median(recorded), CostSource::History(recorded.len()))
}

/// The median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Why a variant was or was not picked.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Picked: the new (test, feature) pairs it covers.
    Picked(Vec<ShapeFeature>),
    /// Left out: every pair it covers is covered by a picked variant.
    NothingNew,
    /// Left out: it covers new pairs but did not fit in the budget left.
    OverBudget {
        /// Seconds left when selection ended.
        left: f64,
    },
}

/// The outcome of a selection, one entry per variant in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Each variant's choice.
    pub choices: Vec<Choice>,
    /// The picked variants' indices, in the order picked.
    pub order: Vec<usize>,
    /// Their expected seconds in all.
    pub expected: f64,
}

impl Selection {
    /// (test, feature) pairs the picked variants cover.
    pub fn covered(&self, variants: &[Variant]) -> BTreeSet<(String, ShapeFeature)> {
        self.order
            .iter()
            .flat_map(|&i| {
                let v = &variants[i];
                v.features().into_iter().map(|f| (v.test.clone(), f))
            })
            .collect()
    }
}

/// Picks variants within `budget` (all of them when `None`, in input
/// order), covering the most new (test, feature) pairs per expected second
/// first; `costs[i]` are the expected seconds of `variants[i]`.
pub fn select(variants: &[Variant], costs: &[f64], budget: Option<Duration>) -> Selection {
    let Some(budget) = budget else {
        return Selection {
            choices: variants
                .iter()
                .map(|v| Choice::Picked(v.features()))
                .collect(),
            order: (0..variants.len()).collect(),
            expected: costs.iter().sum(),
        };
    };
    let mut left = budget.as_secs_f64();
    let mut covered: BTreeSet<(String, ShapeFeature)> = BTreeSet::new();
    let mut choices: Vec<Option<Choice>> = vec![None; variants.len()];
    let mut order = Vec::new();
    loop {
        let new_pairs = |i: usize| -> Vec<ShapeFeature> {
            let v = &variants[i];
            v.features()
                .into_iter()
                .filter(|f| !covered.contains(&(v.test.clone(), *f)))
                .collect()
        };
        let best = (0..variants.len())
            .filter(|&i| choices[i].is_none() && costs[i] <= left)
            .map(|i| (i, new_pairs(i).len()))
            .filter(|&(_, n)| n > 0)
            .max_by(|&(i, n), &(j, m)| {
                let (a, b) = (n as f64 / costs[i].max(0.1), m as f64 / costs[j].max(0.1));
                // Equal value per second: the cheaper, then the earlier.
                a.total_cmp(&b)
                    .then(costs[j].total_cmp(&costs[i]))
                    .then(j.cmp(&i))
            });
        let Some((i, _)) = best else { break };
        let new = new_pairs(i);
        for f in &new {
            covered.insert((variants[i].test.clone(), *f));
        }
        left -= costs[i];
        choices[i] = Some(Choice::Picked(new));
        order.push(i);
    }
    let choices = (0..variants.len())
        .map(|i| {
            choices[i].clone().unwrap_or_else(|| {
                let v = &variants[i];
                let adds = v
                    .features()
                    .into_iter()
                    .any(|f| !covered.contains(&(v.test.clone(), f)));
                if adds {
                    Choice::OverBudget { left }
                } else {
                    Choice::NothingNew
                }
            })
        })
        .collect();
    let expected = order.iter().map(|&i| costs[i]).sum();
    Selection {
        choices,
        order,
        expected,
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not numbers with units.
    #[error("duration {text:?}: expected e.g. 90s, 3m, 1h30m")]
    Malformed {
        /// The text as given.
        text: String,
    },
    /// Zero.
    #[error("duration {text:?}: must be above zero")]
    Zero {
        /// The text as given.
        text: String,
    },
}

/// A duration such as `3m`, `90s`, `1h30m` or `20m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::Malformed {
        text: text.to_string(),
    };
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total == 0 {
        return Err(DurationError::Zero {
            text: text.to_string(),
        });
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(test: &str, preset: &str) -> Variant {
        parse_variant(&format!("{test}::gauntlet::{}", preset_ident(preset))).expect("variant")
    }

    #[test]
    fn libtest_names_map_to_variants() {
        let listing = "steady::gauntlet::llc2_smt: test\nsteady::gauntlet::llc2_smt: test\n\
                       m::x::gauntlet::numa2: test\nplain: test\nx::gauntlet::nope: test\n";
        let vs = variants_in_listing(listing);
        let names: Vec<String> = vs.iter().map(Variant::name).collect();
        assert_eq!(names, ["gauntlet/m::x/numa2", "gauntlet/steady/llc2-smt"]);
        assert!(vs[1].matches("gauntlet/steady/llc2-smt"));
        assert!(vs[1].matches("steady::gauntlet::llc2_smt"));
        assert!(!vs[1].matches("numa"));
    }

    #[test]
    fn the_budget_buys_the_most_pairs_per_second() {
        let vs = [
            v("a", "tiny"),       // flat
            v("a", "smt"),        // smt
            v("a", "numa2-llc4"), // smt, several, numa
            v("a", "llc3"),       // several, odd
            v("a", "llc5"),       // several, odd, dearer: nothing new after llc3
        ];
        let costs = [10.0, 10.0, 20.0, 16.0, 18.0];
        let s = select(&vs, &costs, Some(Duration::from_secs(60)));
        // numa2-llc4 (3 pairs / 20 s) first, then tiny (1 / 10 s), then llc3
        // (1 new / 16 s: odd); 46 s spent, smt and llc5 cover nothing new.
        assert_eq!(s.order, [2, 0, 3]);
        assert_eq!(s.choices[1], Choice::NothingNew);
        assert_eq!(s.choices[4], Choice::NothingNew);
        assert_eq!(s.expected, 46.0);
        assert_eq!(s.covered(&vs).len(), 5);
        // A tight budget leaves pairs out and says so.
        let s = select(&vs, &costs, Some(Duration::from_secs(25)));
        assert_eq!(s.order, [2]);
        assert_eq!(s.choices[0], Choice::OverBudget { left: 5.0 });
        assert!(s.expected <= 25.0);
        // No budget: everything, in order.
        let s = select(&vs, &costs, None);
        assert_eq!(s.order, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn two_tests_cover_their_own_pairs() {
        let vs = [v("a", "llc3"), v("b", "llc3")];
        let s = select(&vs, &[5.0, 5.0], Some(Duration::from_secs(10)));
        assert_eq!(s.order.len(), 2, "the same preset covers each test's pairs");
    }

    #[test]
    fn costs_come_from_history_else_the_model() {
        let tiny = ktstr_topology::preset("tiny").expect("tiny");
        let big = ktstr_topology::preset("llc4").expect("llc4");
        assert_eq!(expected_seconds(&[], tiny, 5), (15.0, CostSource::Model));
        assert!(model_seconds(big, 5) > model_seconds(tiny, 5));
        assert_eq!(
            expected_seconds(&[30.0, 10.0, 20.0], tiny, 5),
            (20.0, CostSource::History(3))
        );
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }

    #[test]
    fn durations_parse_and_bad_ones_say_how() {
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("3")
                .expect_err("unit")
                .to_string()
                .contains("3m")
        );
        assert!(parse_duration("3x").is_err());
        assert!(
            parse_duration("0s")
                .expect_err("zero")
                .to_string()
                .contains("above zero")
        );
    }
}
