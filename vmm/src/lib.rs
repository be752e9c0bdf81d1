//! The VM backend interface, the purpose-built KVM VMM and the QEMU backend.
//!
//! The facade's runner boots a VM description through one backend interface
//! and never learns which backend runs it. Work on it has not started yet.
