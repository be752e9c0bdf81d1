//! Procedural macros of ktstr: `#[ktstr_test]` registers a test that boots a VM.
//!
//! Re-exported by the `ktstr` facade; users never depend on this crate directly.
//! Work on the macros has not started yet.
