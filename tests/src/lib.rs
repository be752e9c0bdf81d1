//! End-to-end tests of ktstr, written through the same entry points users have
//! (`#[ktstr_test]` and the `ktstr` CLI), and the scx-ktstr fixture scheduler.
