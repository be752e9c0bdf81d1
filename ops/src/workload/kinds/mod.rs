//! The work loops of every [`WorkType`], by concern: `solo` (a worker
//! alone, or with helpers that only add load) and `ipc` (tasks that wake each
//! other).

mod ipc;
mod solo;

use super::WorkType;
use super::child::{Env, Observer};

/// Whether `work` is one of the waking kinds of `ipc`.
pub(crate) fn is_ipc(work: &WorkType) -> bool {
    matches!(
        work,
        WorkType::PipePingPong
            | WorkType::FutexPingPong
            | WorkType::FutexFanOut { .. }
            | WorkType::ThunderingHerd { .. }
            | WorkType::WakeChain { .. }
            | WorkType::EpollStorm { .. }
            | WorkType::MutexContention { .. }
            | WorkType::PriorityInversion
    )
}

/// Runs a waking kind with its helpers.
pub(crate) fn run_ipc(work: &WorkType, env: &Env<'_>, obs: &mut Observer<'_>) {
    ipc::run(work, env, obs);
}

/// Runs any other kind.
pub(crate) fn run_simple(work: &WorkType, env: &Env<'_>, obs: &mut Observer<'_>) {
    solo::run(work, env, obs);
}
