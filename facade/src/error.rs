//! Why a test could not be run: failures before or around the VM, as opposed
//! to verdicts about the scheduler.

use crate::config::ConfigError;
use crate::schedulers::SchedulerSetupError;

/// Why the runner could not run a test to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The host configuration (environment) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The declared topology is invalid.
    #[error("invalid topology: {0}")]
    Topology(#[from] ktstr_topology::TopologyError),
    /// Node 0 cannot hold the host-guest channel.
    #[error(
        "memory_mib = {memory_mib} leaves NUMA node 0 only {node0_mib} MiB; ktstr needs at least \
         {need_mib} MiB there (raise memory_mib)"
    )]
    MemoryTooSmall {
        /// The declared memory.
        memory_mib: u64,
        /// What node 0 gets.
        node0_mib: u64,
        /// What node 0 needs.
        need_mib: u64,
    },
    /// No usable kernel.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    /// A randomized boot was asked for, and the kernel has no bzImage.
    #[error(
        "KASLR (kaslr = true or KTSTR_KASLR=1) boots the kernel's bzImage, and {vmlinux} has \
         none beside it: use a cached kernel (`cargo xtask kernel fetch`) or pass its bzImage \
         as KTSTR_KERNEL"
    )]
    NoBzImage {
        /// The vmlinux in use.
        vmlinux: std::path::PathBuf,
    },
    /// A scheduler under test cannot be used.
    #[error(transparent)]
    Scheduler(#[from] SchedulerSetupError),
    /// The guest's initramfs could not be built.
    #[error("building the guest initramfs: {0}")]
    Initramfs(#[from] ktstr_initramfs::InitramfsError),
    /// The test binary could not be found.
    #[error("cannot find the test binary: {0}")]
    TestBinary(std::io::Error),
    /// The backend failed to boot or run the VM.
    #[error("the VM backend ({backend}): {source}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// Its error.
        source: ktstr_vmm::VmmError,
    },
    /// The probes the test asked for cannot be planned.
    #[error("probes = {names}: {source}")]
    Probes {
        /// The test's `probes` key.
        names: String,
        /// Why.
        source: ProbePlanError,
    },
    /// No registered test has this name.
    #[error("no #[ktstr_test] named {0:?} in this binary")]
    NoSuchTest(String),
}

/// Why the kernel or the scheduler could not be read for probes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourcesError {
    /// The vmlinux could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The vmlinux.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its BTF could not be found or parsed.
    #[error("{}: {source}", path.display())]
    Btf {
        /// The vmlinux.
        path: std::path::PathBuf,
        /// The error.
        source: ktstr_btf::BtfError,
    },
}

/// Why a test's probes could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbePlanError {
    /// The kernel could not be read.
    #[error(transparent)]
    Sources(#[from] SourcesError),
    /// The plan could not be made (an unknown function, too many).
    #[error(transparent)]
    Plan(#[from] ktstr_probe::ProbeError),
}

/// `e`'s text with every cause in its chain that the text does not already
/// hold (an error that names only "copy failed" at the top still tells the
/// operating system's answer, e.g. "No space left on device").
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errors_text_holds_its_causes_once() {
        let full = std::io::Error::from_raw_os_error(28);
        let e = RunError::Initramfs(ktstr_initramfs::InitramfsError::Io {
            path: "/t/deps/x".into(),
            op: "copy",
            source: full,
        });
        let t = error_text(&e);
        assert_eq!(
            t,
            format!(
                "building the guest initramfs: /t/deps/x: copy failed: {}",
                std::io::Error::from_raw_os_error(28)
            )
        );
        assert!(t.contains("No space left on device"), "{t}");
    }
}
