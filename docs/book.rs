//! The ktstr book (`docs/src/*.md`) and the README, as item docs: `cargo test
//! -p ktstr-docs --doc` (and `cargo xtask test`'s doctests phase) compiles
//! every Rust code block in them, so the book's examples cannot rot. Blocks that
//! need a VM are `no_run`; shell, text and TOML blocks are not Rust.
//!
//! Every chapter of `docs/src/` must be listed here: `tests/links.rs` fails
//! naming a chapter that is not (and checks every relative link and anchor).

/// The repository's README: its Rust blocks compile.
#[doc = include_str!("../README.md")]
pub mod readme {}

#[doc = include_str!("src/introduction.md")]
pub mod introduction {}

#[doc = include_str!("src/getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("src/writing-tests.md")]
pub mod writing_tests {}

#[doc = include_str!("src/verdicts.md")]
pub mod verdicts {}

#[doc = include_str!("src/monitor.md")]
pub mod monitor {}

#[doc = include_str!("src/auto-repro.md")]
pub mod auto_repro {}

#[doc = include_str!("src/record-replay.md")]
pub mod record_replay {}

#[doc = include_str!("src/real-schedulers.md")]
pub mod real_schedulers {}

#[doc = include_str!("src/gauntlet-and-results.md")]
pub mod gauntlet_and_results {}

#[doc = include_str!("src/many-machines.md")]
pub mod many_machines {}

#[doc = include_str!("src/kernels.md")]
pub mod kernels {}

#[doc = include_str!("src/kaslr.md")]
pub mod kaslr {}

#[doc = include_str!("src/failure-dump.md")]
pub mod failure_dump {}

#[doc = include_str!("src/kernels-from-source.md")]
pub mod kernels_from_source {}

#[doc = include_str!("src/kselftest.md")]
pub mod kselftest {}

#[doc = include_str!("src/restore.md")]
pub mod restore {}

#[doc = include_str!("src/boot-once-restore-many.md")]
pub mod boot_once_restore_many {}

#[doc = include_str!("src/test-suite.md")]
pub mod test_suite {}

#[doc = include_str!("src/vmm.md")]
pub mod vmm {}

#[doc = include_str!("src/crates.md")]
pub mod crates {}

#[doc = include_str!("src/cli.md")]
pub mod cli {}

#[doc = include_str!("src/environment.md")]
pub mod environment {}
