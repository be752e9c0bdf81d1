//! CPU and memory-node lists in the kernel's list format (`0-3,8,10-11`), as
//! `cpuset.cpus`, `cpuset.mems` and sysfs `*_list` files write them.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A set of CPU (or NUMA node) ids, kept sorted.
///
/// Parses and prints the kernel's list format (`Documentation/admin-guide/cgroup-v2.rst`,
/// "cpuset.cpus"): comma-separated ids and inclusive ranges; the empty string is the
/// empty set.
///
/// ```
/// use ktstr_ops::CpuSet;
///
/// let set: CpuSet = "0-2,5".parse()?;
/// assert_eq!(set.iter().collect::<Vec<_>>(), [0, 1, 2, 5]);
/// assert_eq!(set.to_string(), "0-2,5");
/// # Ok::<(), ktstr_ops::CpuSetParseError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuSet(BTreeSet<u32>);

impl From<CpuSet> for String {
    fn from(set: CpuSet) -> String {
        set.to_string()
    }
}

impl TryFrom<String> for CpuSet {
    type Error = CpuSetParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A list that is not in the kernel's list format.
pub type CpuSetParseError = ktstr_topology::CpuListError;

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ids `range.start..range.end`.
    pub fn range(range: std::ops::Range<u32>) -> Self {
        range.collect()
    }

    /// Adds one id.
    pub fn insert(&mut self, id: u32) {
        self.0.insert(id);
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The lowest id.
    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    /// The highest id.
    pub fn last(&self) -> Option<u32> {
        self.0.last().copied()
    }

    /// Whether every id of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[u32; N]> for CpuSet {
    fn from(ids: [u32; N]) -> Self {
        ids.into_iter().collect()
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        ktstr_topology::parse_cpu_list(input).map(CpuSet)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ktstr_topology::format_cpu_list(self.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_ranges() {
        let set: CpuSet = "0-3,8,10-11\n".parse().expect("valid");
        assert_eq!(set.len(), 7);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert_eq!("".parse::<CpuSet>().expect("empty"), CpuSet::new());
        assert_eq!(CpuSet::from([5, 1, 2, 3]).to_string(), "1-3,5");
        assert_eq!(CpuSet::range(0..1).to_string(), "0");
    }

    #[test]
    fn round_trips() {
        for s in ["0", "0-1", "0,2,4", "1-3,7-9,11"] {
            assert_eq!(s.parse::<CpuSet>().expect("valid").to_string(), s);
        }
    }
}
