//! Scenarios: the context a test body gets.

use std::time::Duration;

use ktstr_topology::Topology;

/// What a test body knows about its VM.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The declared topology.
    pub topology: Topology,
    /// The test's duration.
    pub duration: Duration,
    /// False when timing verdicts cannot be trusted.
    pub timing_reliable: bool,
}

impl Ctx {
    /// A context for `topology` and `duration`.
    pub fn new(topology: Topology, duration: Duration) -> Self {
        Ctx {
            topology,
            duration,
            timing_reliable: true,
        }
    }
}
