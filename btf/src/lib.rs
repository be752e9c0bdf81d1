//! Zero-copy parser and query engine for BTF, the kernel's BPF Type Format.
//!
//! Host side of the flow: the monitor, the BPF map reader, the probe decoder
//! and the BPF scheduler build all ask this crate where a field lives and how
//! big a type is. Work on the parser has not started yet.
#![no_std]
