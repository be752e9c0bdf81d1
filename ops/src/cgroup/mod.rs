//! cgroup v2 management in the guest: nested cgroups, cpusets, controllers and
//! task moves.
//!
//! A [`Cgroup`] is a handle on one directory of a cgroup2 hierarchy. Every error
//! names the cgroup and the interface file that failed, so a failing test says
//! "cgroup /sys/fs/cgroup/ktstr/cg_0: writing cpuset.cpus" and not just "EINVAL".

mod cpuset;

pub use cpuset::{CpuSet, CpuSetParseError};

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default cgroup root of a test, under the guest's cgroup2 mount.
pub(crate) const DEFAULT_ROOT: &str = "/sys/fs/cgroup/ktstr";

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// Reading or writing an interface file failed.
    #[error("cgroup {cgroup}: {action} {file}")]
    File {
        /// The cgroup directory.
        cgroup: PathBuf,
        /// The interface file (`cpuset.cpus`, `cgroup.procs`, ...).
        file: String,
        /// `reading` or `writing "<value>" to`.
        action: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Creating or removing the directory failed.
    #[error("cgroup {cgroup}: {action}")]
    Dir {
        /// The cgroup directory.
        cgroup: PathBuf,
        /// `creating` or `removing`.
        action: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A name that is not one path component.
    #[error("cgroup name {0:?} must be one non-empty path component without '/'")]
    BadName(String),
    /// An interface file held something unexpected.
    #[error("cgroup {cgroup}: {file} holds {content:?}, which is not a {expected}")]
    Parse {
        /// The cgroup directory.
        cgroup: PathBuf,
        /// The interface file.
        file: String,
        /// What it held.
        content: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A controller the test needs is not offered by the parent.
    #[error(
        "cgroup {cgroup}: controller {controller} is not in cgroup.controllers ({available:?}); \
         is it bound to a cgroup v1 hierarchy?"
    )]
    MissingController {
        /// The cgroup directory.
        cgroup: PathBuf,
        /// The missing controller.
        controller: String,
        /// What cgroup.controllers offered.
        available: String,
    },
}

/// A handle on one cgroup v2 directory.
///
/// It does not remove the cgroup when dropped: cleanup is explicit
/// ([`Cgroup::remove_tree`]) because a cgroup with live tasks cannot be removed, and
/// the caller knows when its tasks are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// A handle on an existing cgroup directory (not checked).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Cgroup { path: path.into() }
    }

    /// Creates `path` (and missing parents) as a cgroup; an existing one is reused.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|source| CgroupError::Dir {
            cgroup: path.clone(),
            action: "creating",
            source,
        })?;
        Ok(Cgroup { path })
    }

    /// Creates (or reuses) the child cgroup `name`.
    pub fn child(&self, name: &str) -> Result<Cgroup, CgroupError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::BadName(name.to_string()));
        }
        let path = self.path.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Dir {
                    cgroup: path,
                    action: "creating",
                    source,
                });
            }
        }
        Ok(Cgroup { path })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup's name (its last path component).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Reads an interface file, trailing newline removed.
    pub fn read(&self, file: &str) -> Result<String, CgroupError> {
        std::fs::read_to_string(self.path.join(file))
            .map(|s| s.trim_end_matches('\n').to_string())
            .map_err(|source| CgroupError::File {
                cgroup: self.path.clone(),
                file: file.to_string(),
                action: "reading".to_string(),
                source,
            })
    }

    /// Writes `value` to an interface file in one `write(2)`, as the kernel wants.
    pub fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        use std::io::Write;
        let err = |source| CgroupError::File {
            cgroup: self.path.clone(),
            file: file.to_string(),
            action: format!("writing {value:?} to"),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(file))
            .map_err(err)?;
        // One write call: interface files act on each write, a split one would
        // be two requests.
        let n = f.write(value.as_bytes()).map_err(err)?;
        if n != value.len() {
            return Err(err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", value.len()),
            )));
        }
        Ok(())
    }

    /// The controllers this cgroup may enable for its children (`cgroup.controllers`).
    pub fn controllers(&self) -> Result<Vec<String>, CgroupError> {
        Ok(self
            .read("cgroup.controllers")?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    /// Enables `controllers` for this cgroup's children (`cgroup.subtree_control`).
    ///
    /// Fails with [`CgroupError::MissingController`] when one is not offered, which
    /// on a host usually means it is bound to a cgroup v1 hierarchy.
    pub fn enable_controllers(&self, controllers: &[&str]) -> Result<(), CgroupError> {
        let available = self.controllers()?;
        for c in controllers {
            if !available.iter().any(|a| a == c) {
                return Err(CgroupError::MissingController {
                    cgroup: self.path.clone(),
                    controller: c.to_string(),
                    available: available.join(" "),
                });
            }
        }
        let enabled: Vec<String> = self
            .read("cgroup.subtree_control")?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let wanted: Vec<String> = controllers
            .iter()
            .filter(|c| !enabled.iter().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        self.write("cgroup.subtree_control", &wanted.join(" "))
    }

    /// Enables for the children those of `controllers` this cgroup is offered,
    /// and returns them: for controllers a scenario uses when it can.
    pub fn delegate(&self, controllers: &[&str]) -> Result<Vec<String>, CgroupError> {
        let offered = self.controllers()?;
        let usable: Vec<&str> = controllers
            .iter()
            .copied()
            .filter(|c| offered.iter().any(|o| o == c))
            .collect();
        self.enable_controllers(&usable)?;
        Ok(usable.into_iter().map(str::to_string).collect())
    }

    /// Sets `cpuset.cpus` (needs the cpuset controller enabled by the parent).
    pub fn set_cpus(&self, cpus: &CpuSet) -> Result<(), CgroupError> {
        self.write("cpuset.cpus", &cpus.to_string())
    }

    /// Sets `cpuset.mems`.
    pub fn set_mems(&self, mems: &CpuSet) -> Result<(), CgroupError> {
        self.write("cpuset.mems", &mems.to_string())
    }

    /// The CPUs the cgroup may use (`cpuset.cpus.effective`).
    pub fn effective_cpus(&self) -> Result<CpuSet, CgroupError> {
        self.read_list("cpuset.cpus.effective")
    }

    /// The memory nodes the cgroup may use (`cpuset.mems.effective`).
    pub fn effective_mems(&self) -> Result<CpuSet, CgroupError> {
        self.read_list("cpuset.mems.effective")
    }

    fn read_list(&self, file: &str) -> Result<CpuSet, CgroupError> {
        let content = self.read(file)?;
        content.parse().map_err(|_| CgroupError::Parse {
            cgroup: self.path.clone(),
            file: file.to_string(),
            content,
            expected: "CPU list",
        })
    }

    /// Moves process `pid` (all its threads) into this cgroup (`cgroup.procs`).
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// The processes in this cgroup (`cgroup.procs`).
    pub fn processes(&self) -> Result<Vec<u32>, CgroupError> {
        let content = self.read("cgroup.procs")?;
        content
            .lines()
            .map(|l| {
                l.trim().parse().map_err(|_| CgroupError::Parse {
                    cgroup: self.path.clone(),
                    file: "cgroup.procs".to_string(),
                    content: content.clone(),
                    expected: "list of pids",
                })
            })
            .collect()
    }

    /// The child cgroups (sub-directories), by name order.
    pub fn children(&self) -> Result<Vec<Cgroup>, CgroupError> {
        let entries = std::fs::read_dir(&self.path).map_err(|source| CgroupError::Dir {
            cgroup: self.path.clone(),
            action: "listing",
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Dir {
                cgroup: self.path.clone(),
                action: "listing",
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(Cgroup::at(entry.path()));
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes this cgroup and its descendants, deepest first.
    ///
    /// Tasks still inside are moved to `evacuate_to` first when given; otherwise a
    /// populated cgroup fails with EBUSY. Exited-but-unreaped tasks keep a cgroup
    /// busy for a moment, so removal is retried for up to a second.
    pub fn remove_tree(&self, evacuate_to: Option<&Cgroup>) -> Result<(), CgroupError> {
        for child in self.children()? {
            child.remove_tree(evacuate_to)?;
        }
        if let Some(dest) = evacuate_to {
            for pid in self.processes()? {
                // A task may exit between the read and the move: that is fine.
                match dest.add_process(pid) {
                    Ok(()) => {}
                    Err(CgroupError::File { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(CgroupError::Dir {
                        cgroup: self.path.clone(),
                        action: "removing",
                        source,
                    });
                }
            }
        }
    }
}

/// The mount point of the first cgroup2 file system in `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_cgroup2(&info)
}

/// Finds the first cgroup2 mount point in mountinfo text (see proc(5)).
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_mountinfo() {
        let info = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
40 30 0:36 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_cgroup2("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn errors_name_the_cgroup_and_the_file() {
        let cg = Cgroup::at("/nonexistent/ktstr/cg_0");
        let e = cg.write("cpuset.cpus", "0-1").expect_err("no such cgroup");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/ktstr/cg_0"), "{msg}");
        assert!(msg.contains("cpuset.cpus"), "{msg}");
        assert!(msg.contains("\"0-1\""), "{msg}");
        assert!(matches!(
            cg.child("a/b"),
            Err(CgroupError::BadName(n)) if n == "a/b"
        ));
    }
}
