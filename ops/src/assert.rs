//! Verdicts: what a test body (and every check it runs) concludes.
//!
//! An [`AssertResult`] is made in the guest, crosses the channel as JSON, and
//! is merged on the host with what the host saw of the VM.

use serde::{Deserialize, Serialize};

/// One finding of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The check that made it (`starvation`, `fairness`, `body`, ...).
    pub check: String,
    /// What it found, with the figure and the threshold.
    pub message: String,
    /// Whether it is a failure.
    pub failed: bool,
}

/// The verdict of a test body or a check: pass or fail, with details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertResult {
    details: Vec<Detail>,
    /// Reasons the verdict cannot be trusted (e.g. timing with more vCPUs than
    /// host cores); a failing verdict with reasons here is reported inconclusive.
    inconclusive: Vec<String>,
}

impl AssertResult {
    /// A passing verdict with nothing to say.
    pub fn pass() -> Self {
        Self::default()
    }

    /// A failing verdict with one message.
    pub fn fail_msg(message: impl Into<String>) -> Self {
        Self::fail("assert", message)
    }

    /// A failing verdict from `check`.
    pub fn fail(check: &str, message: impl Into<String>) -> Self {
        AssertResult {
            details: vec![Detail {
                check: check.to_string(),
                message: message.into(),
                failed: true,
            }],
            inconclusive: vec![],
        }
    }

    /// Adds an informational (passing) detail.
    pub fn note(mut self, check: &str, message: impl Into<String>) -> Self {
        self.details.push(Detail {
            check: check.to_string(),
            message: message.into(),
            failed: false,
        });
        self
    }

    /// Marks the verdict as not trustworthy, with the reason.
    pub fn inconclusive_because(mut self, reason: impl Into<String>) -> Self {
        self.inconclusive.push(reason.into());
        self
    }

    /// True when no detail failed.
    pub fn is_pass(&self) -> bool {
        !self.details.iter().any(|d| d.failed)
    }

    /// Every detail, failures and notes, in the order they were made.
    pub fn details(&self) -> &[Detail] {
        &self.details
    }

    /// The failing details only.
    pub fn failures(&self) -> impl Iterator<Item = &Detail> {
        self.details.iter().filter(|d| d.failed)
    }

    /// Reasons the verdict is inconclusive.
    pub fn inconclusive(&self) -> &[String] {
        &self.inconclusive
    }

    /// Folds `other` into this verdict: it fails if either failed.
    pub fn merge(&mut self, other: AssertResult) {
        self.details.extend(other.details);
        self.inconclusive.extend(other.inconclusive);
    }

    /// [`AssertResult::merge`] by value.
    pub fn merged(mut self, other: AssertResult) -> Self {
        self.merge(other);
        self
    }
}

impl std::fmt::Display for AssertResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_pass() {
            f.write_str("pass")?;
        } else {
            f.write_str("FAIL")?;
        }
        for d in &self.details {
            let mark = if d.failed { "✗" } else { "·" };
            write!(f, "\n  {mark} [{}] {}", d.check, d.message)?;
        }
        for r in &self.inconclusive {
            write!(f, "\n  ? inconclusive: {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_fails_if_either_fails() {
        let mut v = AssertResult::pass().note("body", "ran");
        assert!(v.is_pass());
        v.merge(AssertResult::fail(
            "starvation",
            "worker 1 made no progress",
        ));
        assert!(!v.is_pass());
        assert_eq!(v.failures().count(), 1);
        assert_eq!(v.details().len(), 2);
        let json = serde_json::to_string(&v).expect("json");
        let back: AssertResult = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, v);
        assert!(
            v.to_string()
                .contains("[starvation] worker 1 made no progress")
        );
    }
}
