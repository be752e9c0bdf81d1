//! Everything ktstr runs inside the guest: verdicts, the init runtime, the
//! channel writer, cgroups, workers, scenario ops and the checks that judge a
//! scheduler.
//!
//! The facade's guest entry hands over to this crate once the test binary
//! runs as the guest's PID 1; the facade's host side reads what this crate
//! writes through the same channel code.

pub mod assert;
pub mod cgroup;
pub mod channel;
pub mod checks;
pub mod runtime;
pub mod scenario;
pub mod scheduler;
pub mod snapshot;
pub mod sysfs;
pub mod workload;
