//! Linux's list format for CPU and node ids (`0-3,8,10-11`), as sysfs
//! `*_list` files, `cpuset.cpus` and `cpuset.mems` write them
//! (Documentation/admin-guide/cgroup-v2.rst, "cpuset.cpus"). The one parser
//! and formatter every crate uses.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use core::fmt::Write as _;
use core::ops::Range;

/// A list that is not in the kernel's list format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a CPU list like \"0-3,5\": {why}")]
pub struct CpuListError {
    input: String,
    why: &'static str,
}

/// The longest range one list entry may name: bounds the work a hostile
/// list can ask for; no machine has more ids.
const MAX_RANGE: u32 = 1 << 16;

/// Parses a list: comma-separated ids and inclusive ranges; blank is empty.
pub fn parse_cpu_list(input: &str) -> Result<BTreeSet<u32>, CpuListError> {
    let err = |why| CpuListError {
        input: input.to_string(),
        why,
    };
    let mut set = BTreeSet::new();
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(set);
    }
    for part in trimmed.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u32 = lo.trim().parse().map_err(|_| err("not a number"))?;
        let hi: u32 = hi.trim().parse().map_err(|_| err("not a number"))?;
        if lo > hi {
            return Err(err("range goes backwards"));
        }
        if hi - lo > MAX_RANGE {
            return Err(err("range too long"));
        }
        set.extend(lo..=hi);
    }
    Ok(set)
}

/// Formats ids (any order, duplicates allowed) as a list: `1-3,5`.
pub fn format_cpu_list(ids: impl IntoIterator<Item = u32>) -> String {
    let sorted: BTreeSet<u32> = ids.into_iter().collect();
    let mut ids = sorted.into_iter().peekable();
    let mut out = String::new();
    while let Some(lo) = ids.next() {
        let mut hi = lo;
        while ids.peek() == Some(&(hi + 1)) {
            hi += 1;
            ids.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = if lo == hi {
            write!(out, "{lo}")
        } else {
            write!(out, "{lo}-{hi}")
        };
    }
    out
}

/// A CPU range in the list format: `3` or `0-3`.
pub fn cpu_list(r: Range<u32>) -> String {
    format_cpu_list(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn parses_and_prints_ranges() {
        let set = parse_cpu_list("0-3,8,10-11\n").expect("valid");
        assert_eq!(set.len(), 7);
        assert_eq!(format_cpu_list(set), "0-3,8,10-11");
        assert!(parse_cpu_list("").expect("empty").is_empty());
        assert_eq!(format_cpu_list([5, 1, 2, 3, 2]), "1-3,5");
        assert_eq!(cpu_list(0..1), "0");
        assert_eq!(cpu_list(4..8), "4-7");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a", "3-1", "1,,2", "-1", "0-99999999"] {
            let e = parse_cpu_list(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips(ids in proptest::collection::btree_set(0u32..300, 0..40)) {
            let text = format_cpu_list(ids.iter().copied());
            let back = parse_cpu_list(&text).expect("own output parses");
            proptest::prop_assert_eq!(back.into_iter().collect::<Vec<_>>(), ids.into_iter().collect::<Vec<_>>());
        }
    }
}
