//! BPF probes for auto-repro: the programs attached in the guest and their decoding on the host.
//!
//! After a scheduler crash the facade reruns the scenario in a second VM with
//! these probes attached along the crash path. Work on it has not started yet.
