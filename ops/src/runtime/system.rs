//! What every guest init needs of the machine: the channel region through
//! `/dev/mem`, the pseudo file systems, the console, power-off.

use std::ffi::CString;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use crate::channel::ChannelMem;

/// Why a guest physical range could not be mapped through `/dev/mem`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DevMemError {
    /// `/dev/mem` could not be opened.
    #[error("open /dev/mem: {0}")]
    Open(std::io::Error),
    /// The length does not fit this machine's `usize`.
    #[error("a mapping of {len:#x} bytes overflows usize")]
    Length {
        /// The length asked for.
        len: u64,
    },
    /// The address does not fit `off_t`.
    #[error("address {gpa:#x} overflows off_t")]
    Address {
        /// The guest physical address.
        gpa: u64,
    },
    /// The kernel refused the mapping.
    #[error("mmap /dev/mem at {gpa:#x}+{len:#x}: {source}")]
    Mmap {
        /// The guest physical address.
        gpa: u64,
        /// The length.
        len: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The channel region mapped through `/dev/mem`.
#[derive(Debug)]
pub(crate) struct DevMem {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is process-wide shared memory; every access goes
// through raw-pointer copies or atomics, which are valid from any thread.
unsafe impl Send for DevMem {}

impl DevMem {
    pub(crate) fn map(gpa: u64, len: u64) -> Result<Self, DevMemError> {
        let path = CString::new("/dev/mem").expect("no NUL in a literal");
        // SAFETY: path is a valid NUL-terminated string.
        let fd =
            unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(DevMemError::Open(std::io::Error::last_os_error()));
        }
        let len = usize::try_from(len).map_err(|_| DevMemError::Length { len })?;
        let off = libc::off_t::try_from(gpa).map_err(|_| DevMemError::Address { gpa })?;
        // SAFETY: a fresh shared mapping of a device file; the kernel checks
        // the range (it must be reserved, not System RAM, under STRICT_DEVMEM).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: fd is ours; the mapping stays valid after close.
        unsafe { libc::close(fd) };
        if p == libc::MAP_FAILED {
            return Err(DevMemError::Mmap {
                gpa,
                len,
                source: err,
            });
        }
        Ok(DevMem {
            base: p.cast(),
            len,
        })
    }

    /// The whole mapping as bytes (the payload region, which only the host
    /// writes, and only before the guest runs).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: base..base+len is a live mapping owned by self; nothing
        // in this guest writes the payload region it is used for.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    fn check(&self, off: u64, n: usize) -> usize {
        let off = off as usize;
        assert!(off + n <= self.len, "channel access out of the mapping");
        off
    }
}

impl ChannelMem for DevMem {
    fn read(&self, off: u64, buf: &mut [u8]) {
        let off = self.check(off, buf.len());
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), buf.as_mut_ptr(), buf.len()) };
    }
    fn write(&self, off: u64, buf: &[u8]) {
        let off = self.check(off, buf.len());
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.base.add(off), buf.len()) };
    }
    fn load_u64(&self, off: u64) -> u64 {
        let off = self.check(off, 8);
        // SAFETY: in bounds; the channel's u64 fields are 8-byte aligned in a
        // page-aligned mapping, so the cast to an atomic is valid.
        let v = unsafe { (*(self.base.add(off) as *const AtomicU64)).load(Ordering::Acquire) };
        fence(Ordering::Acquire);
        v
    }
    fn store_u64(&self, off: u64, v: u64) {
        let off = self.check(off, 8);
        fence(Ordering::Release);
        // SAFETY: as in load_u64.
        unsafe { (*(self.base.add(off) as *const AtomicU64)).store(v, Ordering::Release) };
    }
}

pub(crate) fn console(msg: &str) {
    let _ = writeln!(std::io::stderr(), "ktstr-init: {msg}");
}

/// Whether `target` is a mount point already (another device than its
/// parent's): an init exec'd by the restore agent finds its mounts in place.
fn mounted(target: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = std::path::Path::new(target)
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    match (std::fs::metadata(target), std::fs::metadata(parent)) {
        (Ok(t), Ok(p)) => t.dev() != p.dev(),
        _ => false,
    }
}

pub(crate) fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    if mounted(target) {
        return;
    }
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (src_c, target_c, fstype_c) = (c(src), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        console(&format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

pub(crate) fn setup_mounts() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    mount("tmpfs", "/run", "tmpfs");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    mount("bpf", "/sys/fs/bpf", "bpf");
    distro_root();
}

/// Kernel command-line parameters that become init's environment (the
/// kernel passes unknown `key=value` parameters to init as environment
/// variables): what a login gives a scheduler and its tools.
pub const INIT_ENVIRONMENT: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root";

/// Where the host packs the booted kernel's config; the guest's init puts it
/// where libbpf and tools look for it.
pub const KERNEL_CONFIG_PATH: &str = "/ktstr/kernel-config";

/// What a distro root offers a BPF scheduler and its tooling beyond the
/// mounts: the kernel config at `/boot/config-$(uname -r)` (libbpf resolves
/// `__kconfig` externs from it when there is no `/proc/config.gz`), no cap on
/// locked memory (BPF maps on older kernels count against
/// `RLIMIT_MEMLOCK`), kernel addresses in `/proc/kallsyms`. `PATH` and `HOME`
/// come from the kernel command line, which hands unknown `key=value`
/// parameters to init as its environment ([`INIT_ENVIRONMENT`]).
fn distro_root() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit; no other precondition.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let _ = std::fs::create_dir_all("/root");
    let _ = std::fs::write("/proc/sys/kernel/kptr_restrict", "0");
    if std::path::Path::new(KERNEL_CONFIG_PATH).exists() {
        let release = release();
        let _ = std::fs::create_dir_all("/boot");
        let dest = format!("/boot/config-{release}");
        if let Err(e) = std::fs::copy(KERNEL_CONFIG_PATH, &dest) {
            console(&format!("cannot place the kernel config at {dest}: {e}"));
        }
    }
}

/// The running kernel's release (`uname -r`).
pub(crate) fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `CLOCK_REALTIME` in nanoseconds since the epoch (0 before it).
pub(crate) fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

pub(crate) fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; as PID 1
    // we may power the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 must not exit (the kernel would panic).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
