//! The kernel identity every run record carries: what was booted, where it
//! came from, and the hashes that tell two kernels of one name apart.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::KernelVersion;

/// Where a kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KernelSource {
    /// A distribution's binary package, fetched into the cache.
    Package {
        /// The distribution (`debian`).
        distro: String,
        /// The package name.
        package: String,
        /// The package version.
        version: String,
    },
    /// A file or tree the user named by path.
    Path {
        /// The path as given.
        path: String,
    },
    /// Built from source by ktstr.
    Built {
        /// The spec (`source:7.3`, `git+URL#sha=…`, a tree's path).
        spec: String,
        /// The source's identity: `debian linux-source-7.3 7.3.4-1~bpo13+1`
        /// (a source package), `git <sha>` (a commit), `tree <path> <mtime>`.
        tree: String,
        /// SHA-256 of a git tree's uncommitted changes (`git diff HEAD`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dirty_sha256: Option<String>,
        /// SHA-256 of the config fragments applied (ktstr's, the user's).
        fragment_sha256: String,
    },
}

impl KernelSource {
    /// Reads a cache entry's `source` text (`debian <package> <version>`);
    /// anything else is kept as a path-like description.
    pub fn from_cache_text(text: &str) -> KernelSource {
        let mut w = text.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some(distro), Some(package), Some(version), None) => KernelSource::Package {
                distro: distro.to_string(),
                package: package.to_string(),
                version: version.to_string(),
            },
            _ => KernelSource::Path {
                path: text.to_string(),
            },
        }
    }
}

impl fmt::Display for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSource::Package {
                distro,
                package,
                version,
            } => write!(f, "{distro} {package} {version}"),
            KernelSource::Path { path } => f.write_str(path),
            KernelSource::Built {
                spec,
                tree,
                dirty_sha256,
                fragment_sha256,
            } => {
                write!(f, "built from {spec} ({tree}")?;
                if let Some(d) = dirty_sha256 {
                    write!(f, ", uncommitted changes {}", &d[..d.len().min(12)])?;
                }
                write!(
                    f,
                    ", fragments {})",
                    &fragment_sha256[..fragment_sha256.len().min(12)]
                )
            }
        }
    }
}

/// What a run booted: the typed kernel identity of the run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelId {
    /// The release (`uname -r`), when known.
    pub release: Option<String>,
    /// The upstream version, when the release names one.
    pub version: Option<KernelVersion>,
    /// Where it came from.
    pub source: KernelSource,
    /// SHA-256 of the booted vmlinux (hex).
    pub vmlinux_sha256: String,
    /// SHA-256 of the kernel config (hex), when the config is known.
    pub config_sha256: Option<String>,
    /// When the config is another release's (the archive lost this one's),
    /// that release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_from: Option<String>,
}

impl KernelId {
    /// A short name for test names and tables: the version (`7.3.4`), else
    /// the release, else the vmlinux hash's first 12 digits.
    /// A kernel built from source: its release (`7.3.4-ktstr-1a2b3c4d`),
    /// which tells two builds of one version apart.
    pub fn label(&self) -> String {
        if let (KernelSource::Built { .. }, Some(r)) = (&self.source, &self.release) {
            return r.clone();
        }
        if let Some(v) = self.version {
            return v.to_string();
        }
        if let Some(r) = &self.release {
            return r.clone();
        }
        format!(
            "sha256:{}",
            &self.vmlinux_sha256[..self.vmlinux_sha256.len().min(12)]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_source_text() {
        assert_eq!(
            KernelSource::from_cache_text("debian linux-image-7.0.13+deb13-cloud-amd64 7.0.13-1"),
            KernelSource::Package {
                distro: "debian".into(),
                package: "linux-image-7.0.13+deb13-cloud-amd64".into(),
                version: "7.0.13-1".into(),
            }
        );
        assert_eq!(
            KernelSource::from_cache_text("test"),
            KernelSource::Path {
                path: "test".into()
            }
        );
    }

    #[test]
    fn labels_and_serde() {
        let id = KernelId {
            release: Some("7.3.4+deb13-cloud-amd64".into()),
            version: KernelVersion::of_release("7.3.4+deb13-cloud-amd64"),
            source: KernelSource::Path {
                path: "/k/vmlinux".into(),
            },
            vmlinux_sha256: "0123456789abcdef".into(),
            config_sha256: None,
            config_from: None,
        };
        assert_eq!(id.label(), "7.3.4");
        let json = serde_json::to_string(&id).expect("serializes");
        assert!(
            json.contains(r#""source":{"kind":"path","path":"/k/vmlinux"}"#),
            "{json}"
        );
        let back: KernelId = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, id);
        let bare = KernelId {
            release: None,
            version: None,
            ..id
        };
        assert_eq!(bare.label(), "sha256:0123456789ab");
        let built = KernelId {
            release: Some("7.3.4-ktstr-1a2b3c4d".into()),
            version: KernelVersion::of_release("7.3.4-ktstr-1a2b3c4d"),
            source: KernelSource::Built {
                spec: "source:7.3".into(),
                tree: "debian linux-source-7.3 7.3.4-1~bpo13+1".into(),
                dirty_sha256: None,
                fragment_sha256: "ab".repeat(32),
            },
            ..bare
        };
        assert_eq!(built.label(), "7.3.4-ktstr-1a2b3c4d");
        assert_eq!(
            built.source.to_string(),
            "built from source:7.3 (debian linux-source-7.3 7.3.4-1~bpo13+1, fragments abababababab)"
        );
        let json = serde_json::to_string(&built).expect("serializes");
        assert!(json.contains(r#""kind":"built""#), "{json}");
        assert_eq!(
            serde_json::from_str::<KernelId>(&json).expect("parses"),
            built
        );
    }
}
