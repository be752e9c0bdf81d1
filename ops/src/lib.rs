//! Everything ktstr runs inside the guest: the init runtime, cgroups, workers,
//! scenario ops and the checks that judge a scheduler.
//!
//! The facade's guest entry hands over to this crate once the guest's init is
//! up. Work on it has not started yet.
