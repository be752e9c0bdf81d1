//! The scheduler's own exit: [`scx_bpf_error_contains`], for tests that
//! expect a sched_ext scheduler to stop itself with an error.

use crate::assert::AssertResult;
use crate::scheduler::SchedulerDied;

/// Check name of [`scx_bpf_error_contains`].
pub const SCX_BPF_ERROR: &str = "scx_bpf_error";

/// Passes when the scheduler exited and its exit message (the text of
/// `scx_bpf_error`) or the kernel's reason contains `needle`; fails, naming
/// the check, when it did not exit or exited for another reason.
pub fn scx_bpf_error_contains(death: Option<&SchedulerDied>, needle: &str) -> AssertResult {
    let Some(d) = death else {
        return AssertResult::fail(
            SCX_BPF_ERROR,
            format!(
                "expected the scheduler to exit with an error containing {needle:?}, but it did not exit"
            ),
        );
    };
    let message = d.message.as_deref().unwrap_or("");
    if message.contains(needle) || d.reason.contains(needle) {
        AssertResult::pass().note(
            SCX_BPF_ERROR,
            format!("the scheduler exited as expected, with an error containing {needle:?}: {d}"),
        )
    } else {
        AssertResult::fail(
            SCX_BPF_ERROR,
            format!("expected the scheduler to exit with an error containing {needle:?}, but: {d}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn died(message: Option<&str>) -> SchedulerDied {
        SchedulerDied {
            name: "scx_mine".into(),
            kind: crate::scheduler::ExitKind::ErrorBpf,
            reason: "scx_bpf_error".into(),
            message: message.map(str::to_string),
            status: Some("exit status: 1".into()),
        }
    }

    #[test]
    fn the_expected_error_passes_and_any_other_outcome_fails() {
        let d = died(Some("invalid CPU -1 from ops.select_cpu()"));
        assert!(scx_bpf_error_contains(Some(&d), "invalid CPU").is_pass());
        let v = scx_bpf_error_contains(Some(&d), "stall");
        assert!(v.failed_check(SCX_BPF_ERROR), "{v}");
        assert!(v.to_string().contains("invalid CPU -1"), "{v}");
        let v = scx_bpf_error_contains(None, "invalid CPU");
        assert!(v.failed_check(SCX_BPF_ERROR), "{v}");
        assert!(v.to_string().contains("did not exit"), "{v}");
        assert!(!scx_bpf_error_contains(Some(&died(None)), "invalid").is_pass());
    }
}
