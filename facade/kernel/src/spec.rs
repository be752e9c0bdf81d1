//! Kernel specs: how a user names a kernel (`--kernel`, `KTSTR_KERNEL`), and
//! the pure part of resolving a version spec against the releases a source
//! offers.
//!
//! | spec | means |
//! |---|---|
//! | `PATH` (has a `/`, or is no version) | a vmlinux, bzImage, built tree or cache entry |
//! | `newest` | the newest release with sched_ext |
//! | `7.0` | the newest 7.0.x |
//! | `7.0.13` | exactly 7.0.13 |
//! | `6.18..7.3` | the newest release of each line from 6.18 to 7.3 (every release with `--all-releases`) |
//! | `git+URL#ref`, `source:7.3` | a kernel built from source (not available yet) |
//!
//! A version wins over a file of the same name in the current directory:
//! write `./7.0` for the file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An upstream kernel version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KernelVersion {
    /// The major number.
    pub major: u32,
    /// The minor number: with `major`, the line (`7.0`).
    pub minor: u32,
    /// The stable release within the line.
    pub patch: u32,
}

impl KernelVersion {
    /// The version at the start of a release string (`7.3.4+deb13-cloud-amd64`
    /// -> 7.3.4, `6.18-rc1` -> 6.18.0); `None` when it does not start with one.
    pub fn of_release(release: &str) -> Option<KernelVersion> {
        let end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        let nums: Vec<&str> = release[..end].trim_end_matches('.').split('.').collect();
        let num = |i: usize| nums.get(i).and_then(|s| s.parse::<u32>().ok());
        Some(KernelVersion {
            major: num(0)?,
            minor: num(1)?,
            patch: if nums.len() > 2 { num(2)? } else { 0 },
        })
    }

    /// The line, `(major, minor)`.
    pub fn line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version as written in a spec: a line (`7.0`) or an exact release (`7.0.13`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionReq {
    /// Every release of `major.minor`.
    Line(u32, u32),
    /// Exactly this version.
    Exact(KernelVersion),
}

impl VersionReq {
    fn parse(s: &str) -> Option<VersionReq> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let n = |i: usize| parts[i].parse::<u32>().ok();
        match parts.len() {
            2 => Some(VersionReq::Line(n(0)?, n(1)?)),
            3 => Some(VersionReq::Exact(KernelVersion {
                major: n(0)?,
                minor: n(1)?,
                patch: n(2)?,
            })),
            _ => None,
        }
    }

    /// Whether `v` is of this line or this exact version.
    pub fn matches(&self, v: KernelVersion) -> bool {
        match *self {
            VersionReq::Line(a, b) => v.line() == (a, b),
            VersionReq::Exact(e) => v == e,
        }
    }

    /// The lowest version it admits.
    fn low(&self) -> KernelVersion {
        match *self {
            VersionReq::Line(major, minor) => KernelVersion {
                major,
                minor,
                patch: 0,
            },
            VersionReq::Exact(v) => v,
        }
    }

    /// Whether `v` is at or below the top of this requirement.
    fn admits_below(&self, v: KernelVersion) -> bool {
        match *self {
            VersionReq::Line(a, b) => v.line() <= (a, b),
            VersionReq::Exact(e) => v <= e,
        }
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionReq::Line(a, b) => write!(f, "{a}.{b}"),
            VersionReq::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// How a user names a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A file or directory: vmlinux, bzImage, built tree, cache entry.
    Path(PathBuf),
    /// The newest release with sched_ext.
    Newest,
    /// A line or an exact release.
    Version(VersionReq),
    /// Every line (or release) from `from` to `to`, both included.
    Range {
        /// The lower end.
        from: VersionReq,
        /// The upper end.
        to: VersionReq,
    },
    /// A git repository and ref to build from (`git+URL#ref`).
    Git(String),
    /// A distribution's source package to build from (`source:7.3`).
    Source(String),
}

impl KernelSpec {
    /// The spec of an optional path (for callers that hold paths).
    pub fn of_path(p: Option<&std::path::Path>) -> Option<KernelSpec> {
        p.map(|p| KernelSpec::Path(p.to_path_buf()))
    }

    /// Whether resolving it may need the network (anything but a path).
    pub fn is_version(&self) -> bool {
        matches!(
            self,
            KernelSpec::Newest | KernelSpec::Version(_) | KernelSpec::Range { .. }
        )
    }

    /// The releases of `available` this spec selects, oldest first (pure).
    ///
    /// `all_releases`: a range selects every release in it, not only the
    /// newest of each line. An empty answer is an error naming the closest
    /// releases there are.
    pub fn select<'a>(
        &self,
        available: &'a [KernelVersion],
        all_releases: bool,
    ) -> Result<Vec<&'a KernelVersion>, SelectError> {
        let mut sorted: Vec<&KernelVersion> = available.iter().collect();
        sorted.sort();
        sorted.dedup();
        let newest_per_line = |vs: Vec<&'a KernelVersion>| -> Vec<&'a KernelVersion> {
            let mut out: Vec<&KernelVersion> = Vec::new();
            for v in vs {
                match out.last() {
                    Some(last) if last.line() == v.line() => {
                        out.pop();
                        out.push(v);
                    }
                    _ => out.push(v),
                }
            }
            out
        };
        let picked: Vec<&KernelVersion> = match self {
            KernelSpec::Newest => sorted.last().copied().into_iter().collect(),
            KernelSpec::Version(req) => sorted
                .iter()
                .copied()
                .rfind(|v| req.matches(**v))
                .into_iter()
                .collect(),
            KernelSpec::Range { from, to } => {
                if from.low() > to.low() && !to.matches(from.low()) {
                    return Err(SelectError::EmptyRange {
                        from: *from,
                        to: *to,
                    });
                }
                let inside: Vec<&KernelVersion> = sorted
                    .iter()
                    .copied()
                    .filter(|v| **v >= from.low() && to.admits_below(**v))
                    .collect();
                if all_releases {
                    inside
                } else {
                    newest_per_line(inside)
                }
            }
            KernelSpec::Path(_) | KernelSpec::Git(_) | KernelSpec::Source(_) => {
                return Err(SelectError::NotAVersion);
            }
        };
        if picked.is_empty() {
            return Err(SelectError::NoMatch {
                closest: closest(self, &sorted),
            });
        }
        Ok(picked)
    }
}

/// The newest release of the three lines nearest to what `spec` asked
/// for, for the message.
fn closest(spec: &KernelSpec, sorted: &[&KernelVersion]) -> Vec<KernelVersion> {
    let mut newest: Vec<KernelVersion> = Vec::new();
    for v in sorted {
        if newest.last().is_some_and(|l| l.line() == v.line()) {
            newest.pop();
        }
        newest.push(**v);
    }
    let target = match spec {
        KernelSpec::Version(r) => r.low(),
        KernelSpec::Range { from, .. } => from.low(),
        _ => {
            return newest.iter().rev().take(3).rev().copied().collect();
        }
    };
    let key = |v: &KernelVersion| (i64::from(v.major) << 20) | i64::from(v.minor);
    let t = key(&target);
    newest.sort_by_key(|v| (key(v) - t).abs());
    newest.truncate(3);
    newest.sort();
    newest
}

/// Why a version spec selected nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The range's lower end is above its upper end.
    #[error("the range {from}..{to} is empty: write the older version first ({to}..{from})")]
    EmptyRange {
        /// The lower end as written.
        from: VersionReq,
        /// The upper end as written.
        to: VersionReq,
    },
    /// No release matches.
    #[error("no release matches{}", closest_text(closest))]
    NoMatch {
        /// The nearest releases there are.
        closest: Vec<KernelVersion>,
    },
    /// The spec is a path or a source, not a version.
    #[error("not a version spec")]
    NotAVersion,
}

fn closest_text(closest: &[KernelVersion]) -> String {
    if closest.is_empty() {
        return "; none is available".into();
    }
    let list: Vec<String> = closest.iter().map(ToString::to_string).collect();
    format!("; the closest available: {}", list.join(", "))
}

/// A spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel spec {spec:?}: {why}")]
pub struct SpecError {
    /// The text given.
    pub spec: String,
    /// What is wrong, and the fix.
    pub why: String,
}

impl FromStr for KernelSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| SpecError {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err(
                "empty: give a version (7.3, 7.3.4, 6.18..7.3, newest) or a path",
            ));
        }
        if let Some(rest) = t.strip_prefix("git+") {
            if rest.is_empty() {
                return Err(err(
                    "git+ needs a URL, e.g. git+file:///src/linux#branch=for-next",
                ));
            }
            return Ok(KernelSpec::Git(rest.to_string()));
        }
        if let Some(rest) = t.strip_prefix("source:") {
            return Ok(KernelSpec::Source(rest.to_string()));
        }
        if matches!(t, "newest" | "latest") {
            return Ok(KernelSpec::Newest);
        }
        if t.contains('/') {
            return Ok(KernelSpec::Path(PathBuf::from(s)));
        }
        if let Some((a, b)) = t.split_once("..") {
            let side = |x: &str, which: &str| {
                VersionReq::parse(x.trim()).ok_or_else(|| {
                    err(&format!(
                        "the range's {which} end {x:?} is not a version like 6.18 or 7.3.4"
                    ))
                })
            };
            let (from, to) = (side(a, "lower")?, side(b, "upper")?);
            if from.low() > to.low() && !to.matches(from.low()) {
                return Err(err(&format!(
                    "the range is empty: write the older version first ({to}..{from})"
                )));
            }
            return Ok(KernelSpec::Range { from, to });
        }
        if let Some(v) = VersionReq::parse(t) {
            return Ok(KernelSpec::Version(v));
        }
        if t.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Err(err(
                "not a version: give a line (7.0) or a release (7.0.13)",
            ));
        }
        Ok(KernelSpec::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Path(p) => write!(f, "{}", p.display()),
            KernelSpec::Newest => f.write_str("newest"),
            KernelSpec::Version(v) => write!(f, "{v}"),
            KernelSpec::Range { from, to } => write!(f, "{from}..{to}"),
            KernelSpec::Git(u) => write!(f, "git+{u}"),
            KernelSpec::Source(s) => write!(f, "source:{s}"),
        }
    }
}

/// Why a source spec (`git+URL#ref`, `source:X.Y`) names no source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceSpecError {
    /// `git+#ref`: nothing before the `#`.
    #[error("no URL before `#`")]
    NoUrl,
    /// The text after `#` is not one of the refs.
    #[error("`#{fragment}` is not a ref: write #branch=NAME, #tag=NAME or #sha=HEX")]
    BadRef {
        /// The text after `#`.
        fragment: String,
    },
    /// `source:<line>` with a line that is not MAJOR.MINOR[.PATCH].
    #[error(
        "`source:{line}` names no source package: write source:MAJOR.MINOR (source:7.3) or \
         source:MAJOR.MINOR.PATCH"
    )]
    BadLine {
        /// The text after `source:`.
        line: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KernelVersion {
        KernelVersion::of_release(s).expect("version")
    }

    fn archive() -> Vec<KernelVersion> {
        [
            "6.12.43", "6.12.95", "6.18.5", "6.18.15", "6.19.14", "7.0.4", "7.0.13", "7.0.9",
            "7.1.13", "7.2.6", "7.2.12", "7.3.4",
        ]
        .iter()
        .map(|s| v(s))
        .collect()
    }

    fn pick(spec: &str, all: bool) -> Result<Vec<String>, SelectError> {
        let spec: KernelSpec = spec.parse().expect("parses");
        let a = archive();
        spec.select(&a, all)
            .map(|vs| vs.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn versions_of_debian_releases() {
        assert_eq!(v("7.3.4+deb13-cloud-amd64").to_string(), "7.3.4");
        assert_eq!(v("6.12.90+deb12.1-cloud-amd64").to_string(), "6.12.90");
        assert_eq!(v("6.1.0-28-cloud-amd64").to_string(), "6.1.0");
        assert_eq!(v("6.18-rc1").to_string(), "6.18.0");
        assert_eq!(KernelVersion::of_release("linux"), None);
        assert!(v("7.0.13") > v("7.0.9"));
    }

    #[test]
    fn specs_parse() {
        let p = |s: &str| s.parse::<KernelSpec>().expect(s);
        assert_eq!(p("7.0"), KernelSpec::Version(VersionReq::Line(7, 0)));
        assert_eq!(
            p("7.0.13"),
            KernelSpec::Version(VersionReq::Exact(v("7.0.13")))
        );
        assert_eq!(p("newest"), KernelSpec::Newest);
        assert_eq!(
            p("6.12..7.3"),
            KernelSpec::Range {
                from: VersionReq::Line(6, 12),
                to: VersionReq::Line(7, 3)
            }
        );
        assert_eq!(p("./7.0"), KernelSpec::Path("./7.0".into()));
        assert_eq!(p("/boot/vmlinux"), KernelSpec::Path("/boot/vmlinux".into()));
        assert_eq!(p("vmlinux"), KernelSpec::Path("vmlinux".into()));
        assert_eq!(
            p("git+file:///l#sha=1"),
            KernelSpec::Git("file:///l#sha=1".into())
        );
        assert_eq!(p("source:7.3"), KernelSpec::Source("7.3".into()));
        for s in [
            "7.0",
            "7.0.13",
            "6.12..7.3",
            "newest",
            "git+x",
            "source:7.3",
        ] {
            assert_eq!(p(s).to_string(), s, "round trip");
        }
    }

    #[test]
    fn bad_specs_say_why() {
        let e = |s: &str| s.parse::<KernelSpec>().expect_err(s).to_string();
        assert!(e("7.3..7.0").contains("empty: write the older version first (7.0..7.3)"));
        assert!(e("7..7.3").contains("lower end \"7\""), "{}", e("7..7.3"));
        assert!(e("7.0.1.2").contains("not a version"), "{}", e("7.0.1.2"));
        assert!(e("").contains("empty"));
        assert!(e("git+").contains("needs a URL"));
    }

    #[test]
    fn selection() {
        assert_eq!(pick("7.0", false).expect("7.0"), ["7.0.13"]);
        assert_eq!(pick("7.0.9", false).expect("7.0.9"), ["7.0.9"]);
        assert_eq!(pick("newest", false).expect("newest"), ["7.3.4"]);
        assert_eq!(
            pick("6.18..7.3", false).expect("range"),
            ["6.18.15", "6.19.14", "7.0.13", "7.1.13", "7.2.12", "7.3.4"]
        );
        assert_eq!(
            pick("7.0..7.1", true).expect("all"),
            ["7.0.4", "7.0.9", "7.0.13", "7.1.13"]
        );
        assert_eq!(
            pick("7.0.9..7.2.6", true).expect("exact ends"),
            ["7.0.9", "7.0.13", "7.1.13", "7.2.6"]
        );
        assert_eq!(pick("7.3..7.3", false).expect("one line"), ["7.3.4"]);
    }

    #[test]
    fn no_match_names_the_closest() {
        let e = pick("9.9", false).expect_err("9.9");
        assert_eq!(
            e.to_string(),
            "no release matches; the closest available: 7.1.13, 7.2.12, 7.3.4"
        );
        let e = pick("7.0.14", false).expect_err("7.0.14");
        assert!(e.to_string().contains("7.0.13"), "{e}");
        let e = pick("6.13..6.17", false).expect_err("gap");
        assert!(matches!(e, SelectError::NoMatch { .. }), "{e}");
        let none: Vec<KernelVersion> = vec![];
        let e = KernelSpec::Newest.select(&none, false).expect_err("empty");
        assert_eq!(e.to_string(), "no release matches; none is available");
    }
}
