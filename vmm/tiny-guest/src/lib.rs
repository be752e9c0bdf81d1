//! The guests of ktstr-vmm's own tests, compiled by this crate's build script
//! with the host's gcc (`KTSTR_CC` overrides the compiler):
//!
//! - the tiny guest (`entry.S`, `guest.c`, `link.ld`): a freestanding kernel that
//!   reports what it was booted with over COM2, as a PVH ELF ([`pvh_elf`]) and
//!   as a bzImage ([`bzimage`]);
//! - the static `/init` of the Linux-boot tests (`linux-init.c`, [`linux_init`]).
//!
//! It is a dev-dependency of `ktstr-vmm` and of nothing else, so a crate that
//! builds `ktstr-vmm` (or `ktstr`) as a normal dependency never runs gcc. When
//! the build script could not build the guests the crate still compiles, and
//! every accessor returns [`NotBuilt`] with the build script's reason, so a test
//! that needs a guest fails and says why.
//!
//! ```
//! match ktstr_tiny_guest::pvh_elf() {
//!     Ok(elf) => assert!(elf.is_file(), "{}", elf.display()),
//!     Err(not_built) => assert!(!not_built.to_string().is_empty()),
//! }
//! ```

use std::fmt;
use std::path::Path;

/// The guests were not built; the message is the build script's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBuilt(&'static str);

impl fmt::Display for NotBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the tiny guest was not built (gcc, objcopy and nm are needed): {}",
            self.0
        )
    }
}

impl std::error::Error for NotBuilt {}

#[cfg(ktstr_tiny_guest)]
const BUILT: Result<(), NotBuilt> = Ok(());
#[cfg(not(ktstr_tiny_guest))]
const BUILT: Result<(), NotBuilt> = Err(NotBuilt(env!("KTSTR_TINY_GUEST_NOT_BUILT")));

#[cfg(ktstr_tiny_guest)]
mod out {
    pub const PVH_ELF: &str = concat!(env!("OUT_DIR"), "/tiny-guest.elf");
    pub const BZIMAGE: &str = concat!(env!("OUT_DIR"), "/tiny-guest.bzImage");
    /// Embedded, so a test binary also runs where its build directory is not
    /// (the nested-SVM L1).
    pub static LINUX_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ktstr-linux-init"));
}

#[cfg(not(ktstr_tiny_guest))]
mod out {
    pub const PVH_ELF: &str = "";
    pub const BZIMAGE: &str = "";
    pub static LINUX_INIT: &[u8] = &[];
}

/// The tiny guest as a PVH ELF kernel (a file in this crate's build directory).
pub fn pvh_elf() -> Result<&'static Path, NotBuilt> {
    BUILT.map(|()| Path::new(out::PVH_ELF))
}

/// The same guest in a bzImage container (setup header of protocol 2.15).
pub fn bzimage() -> Result<&'static Path, NotBuilt> {
    BUILT.map(|()| Path::new(out::BZIMAGE))
}

/// The static `/init` of the Linux-boot tests, as bytes to put in an initramfs.
pub fn linux_init() -> Result<&'static [u8], NotBuilt> {
    BUILT.map(|()| out::LINUX_INIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the project's machines gcc is installed: the guests are built, and
    /// both images and the /init are ELF or bzImage files, not empty paths.
    #[test]
    fn the_guests_are_built() {
        let elf = pvh_elf().unwrap_or_else(|e| panic!("{e}"));
        let elf_bytes = std::fs::read(elf).expect("read the PVH ELF");
        assert_eq!(&elf_bytes[..4], b"\x7fELF");
        let bz = std::fs::read(bzimage().unwrap_or_else(|e| panic!("{e}"))).expect("read");
        assert_eq!(&bz[0x202..0x206], b"HdrS");
        let init = linux_init().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&init[..4], b"\x7fELF");
    }
}
