//! The guest root builder: a deterministic cpio `newc` writer and the ELF
//! shared-library closure of the binaries it packs.
//!
//! The facade's runner packs the test binary, its libraries and the schedulers
//! under test into the initramfs every test VM boots. Work on it has not started yet.
