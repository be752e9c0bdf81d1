//! Typed reads of a running guest kernel's memory from the host.
//!
//! The facade's monitor uses it to read runqueues, DSQs and BPF maps through
//! BTF-resolved offsets without touching the guest. Work on it has not started yet.
