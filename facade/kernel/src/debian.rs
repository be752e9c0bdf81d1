//! Fetching Debian's sched_ext-enabled cloud kernels.
//!
//! The mirror is never named by ktstr: it is read from the machine's own apt
//! sources. ktstr keeps a private apt state (lists, package cache, sources) in
//! its cache directory, so fetching needs neither root nor changes to the
//! host's apt configuration, and never installs the kernel on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::KernelError;

/// Debian codenames in release order, to find the suite after the host's own
/// (sched_ext kernels come from the next release's backports).
const CODENAMES: &[&str] = &["buster", "bullseye", "bookworm", "trixie", "forky", "duke"];

/// Where the host's apt sources keep the Debian archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The repository URI.
    pub uri: String,
    /// Suites served from it.
    pub suites: Vec<String>,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    /// The `Signed-By` keyring, if any.
    pub signed_by: Option<String>,
}

/// Parses deb822 `.sources` text.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = String::new();
        let mut src = AptSource {
            uri: String::new(),
            suites: vec![],
            components: vec![],
            signed_by: None,
        };
        let mut enabled = true;
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v.to_string(),
                "uris" => src.uri = v.split_whitespace().next().unwrap_or("").to_string(),
                "suites" => src.suites = v.split_whitespace().map(str::to_string).collect(),
                "components" => src.components = v.split_whitespace().map(str::to_string).collect(),
                "signed-by" if v.starts_with('/') => src.signed_by = Some(v.to_string()),
                "enabled" => enabled = !v.eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.split_whitespace().any(|t| t == "deb") && !src.uri.is_empty() {
            out.push(src);
        }
    }
    out
}

/// Parses one-line-style `sources.list` text.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line.strip_prefix("deb ") {
            Some(r) => r.trim_start(),
            None => continue,
        };
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                if let Some(p) = o.strip_prefix("signed-by=") {
                    signed_by = Some(p.to_string());
                }
            }
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
        });
    }
    out
}

/// Reads every apt source configured on the host.
pub fn system_sources() -> Vec<AptSource> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        out.extend(parse_one_line(&t));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let Ok(t) = std::fs::read_to_string(&p) else {
                continue;
            };
            match p.extension().and_then(|e| e.to_str()) {
                Some("sources") => out.extend(parse_deb822(&t)),
                Some("list") => out.extend(parse_one_line(&t)),
                _ => {}
            }
        }
    }
    out
}

/// The host's Debian codename, from `/etc/os-release`.
pub fn os_codename() -> Result<String, KernelError> {
    let text = std::fs::read_to_string("/etc/os-release").map_err(|e| KernelError::NoMirror {
        detail: format!("cannot read /etc/os-release: {e}"),
    })?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_string())
    };
    if field("ID=").as_deref() != Some("debian") {
        return Err(KernelError::NoMirror {
            detail:
                "this host is not Debian; fetch the kernel on a Debian host or set KTSTR_KERNEL"
                    .into(),
        });
    }
    field("VERSION_CODENAME=").ok_or_else(|| KernelError::NoMirror {
        detail: "/etc/os-release has no VERSION_CODENAME".into(),
    })
}

/// The Debian archive mirror the host already uses for its own release.
pub fn debian_mirror(sources: &[AptSource], codename: &str) -> Result<AptSource, KernelError> {
    sources
        .iter()
        .find(|s| {
            s.suites.iter().any(|x| x == codename) && s.components.iter().any(|c| c == "main")
        })
        .cloned()
        .ok_or_else(|| KernelError::NoMirror {
            detail: format!("no apt source serves suite {codename} with component main"),
        })
}

/// The suites searched for sched_ext kernels: the host release's backports
/// and the next release's backports.
pub fn kernel_suites(codename: &str) -> Vec<String> {
    let mut suites = vec![format!("{codename}-backports")];
    let next = CODENAMES
        .iter()
        .position(|c| *c == codename)
        .and_then(|i| CODENAMES.get(i + 1));
    if let Some(next) = next {
        suites.push(format!("{next}-backports"));
    }
    suites
}

/// A kernel image package found in the package index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The package name.
    pub package: String,
    /// The kernel release (`uname -r` of the kernel).
    pub release: String,
}

/// Recognizes the cloud kernel image packages of Debian's layouts:
/// `linux-binary-unsigned-<rel>` and `linux-binary-<rel>` (7.x; there
/// `linux-image-<rel>` is a metapackage of them), and
/// `linux-image-<rel>[-unsigned]` (6.x).
pub fn candidate_from_name(package: &str) -> Option<Candidate> {
    let release = package
        .strip_prefix("linux-binary-unsigned-")
        .or_else(|| package.strip_prefix("linux-binary-"))
        .or_else(|| package.strip_prefix("linux-image-"))?;
    let release = release.strip_suffix("-unsigned").unwrap_or(release);
    if !release.ends_with("-cloud-amd64") || !release.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(Candidate {
        package: package.to_string(),
        release: release.to_string(),
    })
}

/// Which package of a release to take first (lower first).
fn layout_rank(package: &str) -> u8 {
    if package.starts_with("linux-binary-unsigned-") {
        0
    } else if package.starts_with("linux-binary-") {
        1
    } else if package.ends_with("-unsigned") {
        2
    } else {
        3
    }
}

/// A private apt state under the ktstr cache: its own sources, lists and archives.
#[derive(Debug)]
pub struct PrivateApt {
    dir: PathBuf,
    mirror: AptSource,
    suites: Vec<String>,
}

/// Where to fetch from instead of the host's own Debian mirror (a local or
/// test repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSource {
    /// The repository URI (`http://...`, `file:/...`).
    pub uri: String,
    /// The suites to search.
    pub suites: Vec<String>,
    /// Accept it unsigned (`[trusted=yes]`), for local repositories.
    pub trusted: bool,
}

impl PrivateApt {
    /// Sets up the private state for `suites` of `mirror` in `dir`.
    pub fn new(dir: &Path, mirror: AptSource, suites: Vec<String>) -> Result<Self, KernelError> {
        for sub in ["lists/partial", "cache/archives/partial", "etc"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| KernelError::io(&p, e))?;
        }
        // An AptSource whose signed_by is "trusted=yes" is a local test repository.
        let opts = match mirror.signed_by.as_deref() {
            Some("trusted=yes") => "trusted=yes".to_string(),
            Some(k) => format!("signed-by={k}"),
            None => "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg".into(),
        };
        let mut list = String::new();
        for s in &suites {
            list.push_str(&format!("deb [{opts}] {} {s} main\n", mirror.uri));
        }
        let p = dir.join("etc/sources.list");
        std::fs::write(&p, list).map_err(|e| KernelError::io(&p, e))?;
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
            mirror,
            suites,
        })
    }

    /// The mirror URI, for messages and metadata.
    pub fn mirror_uri(&self) -> &str {
        &self.mirror.uri
    }

    /// The suites searched.
    pub fn suites(&self) -> &[String] {
        &self.suites
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = self.dir.display();
        c.arg(format!("-oDir::Etc::SourceList={d}/etc/sources.list"))
            .arg("-oDir::Etc::SourceParts=/nonexistent")
            .arg(format!("-oDir::State::Lists={d}/lists"))
            .arg(format!("-oDir::Cache={d}/cache"))
            .arg("-oAPT::Architectures=amd64")
            .arg("-oAcquire::Languages=none")
            .arg("-oAcquire::Retries=2");
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Root's downloads would drop privileges to _apt, which cannot
            // write into the user's cache directory.
            c.arg("-oAPT::Sandbox::User=root");
        }
        c.env("LC_ALL", "C");
        c
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String, KernelError> {
        // One apt command at a time on this state, across processes: two
        // `apt-get update`s (parallel tests, two `cargo ktstr`s) would
        // otherwise fail on apt's own lock, which is no mirror's fault.
        let lock_path = self.dir.join("ktstr-apt.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| KernelError::io(&lock_path, e))?;
        lock.lock().map_err(|e| KernelError::io(&lock_path, e))?;
        let out = cmd.output().map_err(|e| KernelError::Command {
            command: what.to_string(),
            detail: format!("cannot run it ({e}); ktstr fetches kernels with Debian's apt tools"),
        })?;
        if !out.status.success() {
            return Err(KernelError::Command {
                command: what.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Refreshes the private package lists.
    pub fn update(&self) -> Result<(), KernelError> {
        let mut c = self.command("apt-get");
        // Without --error-on=any, apt-get update exits 0 when a mirror is unreachable.
        c.args(["-q", "--error-on=any", "update"]);
        self.run(c, "apt-get update")
            .map(drop)
            .map_err(|e| match e {
                KernelError::Command { detail, .. } => KernelError::MirrorUnreachable {
                    uri: self.mirror.uri.clone(),
                    detail,
                },
                e => e,
            })
    }

    /// Every cloud kernel image package in the lists, newest release first.
    pub fn candidates(&self) -> Result<Vec<Candidate>, KernelError> {
        let mut c = self.command("apt-cache");
        c.args([
            "search",
            "--names-only",
            "^linux-(binary-unsigned|binary|image)-[0-9].*-cloud-amd64",
        ]);
        let text = self.run(c, "apt-cache search")?;
        let mut found: Vec<Candidate> = text
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .filter_map(candidate_from_name)
            .collect();
        found.sort_by(|a, b| {
            super::version::compare(&b.release, &a.release)
                // The package that holds the image itself first: the
                // unsigned binary, the signed binary, then linux-image
                // (only a metapackage where a binary package exists).
                .then_with(|| layout_rank(&a.package).cmp(&layout_rank(&b.package)))
        });
        found.dedup_by(|a, b| a.release == b.release);
        Ok(found)
    }

    /// The releases whose `linux-base-<release>` (the config of the 7.x
    /// layout) is in the lists.
    pub fn base_releases(&self) -> Result<Vec<String>, KernelError> {
        let mut c = self.command("apt-cache");
        c.args(["search", "--names-only", "^linux-base-[0-9].*-cloud-amd64$"]);
        let text = self.run(c, "apt-cache search")?;
        Ok(text
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .filter_map(|p| p.strip_prefix("linux-base-"))
            .map(str::to_string)
            .collect())
    }

    /// Whether `package` is in the lists.
    pub fn has_package(&self, package: &str) -> bool {
        let mut c = self.command("apt-cache");
        c.args(["show", "--no-all-versions", package]);
        self.run(c, "apt-cache show")
            .is_ok_and(|t| !t.trim().is_empty())
    }

    /// The candidate version of `package`.
    pub fn version(&self, package: &str) -> Result<String, KernelError> {
        let mut c = self.command("apt-cache");
        c.args(["show", "--no-all-versions", package]);
        let text = self.run(c, &format!("apt-cache show {package}"))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or("unknown")
            .to_string())
    }

    /// Downloads `package` (the .deb only, nothing is installed) into `into`;
    /// returns the file's path.
    pub fn download(&self, package: &str, into: &Path) -> Result<PathBuf, KernelError> {
        let mut c = self.command("apt-get");
        c.args(["-q", "download", package]).current_dir(into);
        self.run(c, &format!("apt-get download {package}"))?;
        let deb = std::fs::read_dir(into)
            .map_err(|e| KernelError::io(into, e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .ok_or_else(|| KernelError::Command {
                command: format!("apt-get download {package}"),
                detail: "no .deb file appeared".into(),
            })?;
        Ok(deb)
    }

    /// Downloads `package` (the .deb only, nothing is installed) into `into`
    /// and unpacks it into `into/root`.
    pub fn download_and_unpack(&self, package: &str, into: &Path) -> Result<(), KernelError> {
        let deb = self.download(package, into)?;
        let root = into.join("root");
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(&deb).arg(&root);
        self.run(c, &format!("dpkg-deb -x {}", deb.display()))?;
        std::fs::remove_file(&deb).map_err(|e| KernelError::io(&deb, e))?;
        Ok(())
    }
}

/// Finds the kernel image and config of `release` in an unpacked package tree,
/// in either Debian layout (`boot/vmlinuz-<rel>` or `usr/lib/modules/<rel>/vmlinuz*`).
pub fn locate_files(root: &Path, release: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let first = |cands: &[PathBuf]| cands.iter().find(|p| p.is_file()).cloned();
    let moddir = root.join("usr/lib/modules").join(release);
    let image = first(&[
        root.join(format!("boot/vmlinuz-{release}")),
        moddir.join("vmlinuz.unsigned"),
        moddir.join("vmlinuz"),
    ]);
    let config = first(&[
        root.join(format!("boot/config-{release}")),
        moddir.join("config"),
    ]);
    (image, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb822_and_finds_the_mirror() {
        let text = "Types: deb\n# a comment\nURIs: file:/srv/archive/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/k.gpg\n\nTypes: deb\nURIs: file:/srv/archive/debian-security\nSuites: bookworm-security\nComponents: main\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2);
        let m = debian_mirror(&s, "bookworm").expect("mirror");
        assert_eq!(m.uri, "file:/srv/archive/debian");
        assert_eq!(m.signed_by.as_deref(), Some("/usr/share/keyrings/k.gpg"));
        assert!(debian_mirror(&s, "trixie").is_err());
    }

    #[test]
    fn parses_one_line_sources() {
        let s = parse_one_line(
            "deb [arch=amd64 signed-by=/k.gpg] file:/srv/archive/debian bookworm main contrib\n# deb file:/x y z\ndeb-src file:/srv/archive/debian bookworm main\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suites, ["bookworm"]);
        assert_eq!(s[0].signed_by.as_deref(), Some("/k.gpg"));
    }

    #[test]
    fn recognizes_both_package_layouts() {
        let c = candidate_from_name("linux-binary-unsigned-7.3.4+deb13-cloud-amd64").expect("7.x");
        assert_eq!(c.release, "7.3.4+deb13-cloud-amd64");
        let c = candidate_from_name("linux-image-6.12.38+deb13-cloud-amd64-unsigned").expect("6.x");
        assert_eq!(c.release, "6.12.38+deb13-cloud-amd64");
        let c = candidate_from_name("linux-binary-7.0.13+deb13-cloud-amd64").expect("signed 7.x");
        assert_eq!(c.release, "7.0.13+deb13-cloud-amd64");
        assert!(layout_rank(&c.package) < layout_rank("linux-image-7.0.13+deb13-cloud-amd64"));
        assert!(candidate_from_name("linux-image-cloud-amd64").is_none());
        assert!(candidate_from_name("linux-image-7.3.4+deb13-amd64").is_none());
        assert!(candidate_from_name("linux-headers-7.3.4+deb13-cloud-amd64").is_none());
    }

    #[test]
    fn suites_follow_the_host_release() {
        assert_eq!(
            kernel_suites("bookworm"),
            ["bookworm-backports", "trixie-backports"]
        );
    }
}
