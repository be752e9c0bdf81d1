//! Verdicts: what a test body (and every check it runs) concludes.
//!
//! An [`AssertResult`] is made in the guest, crosses the channel as JSON, and
//! is merged on the host with what the host saw of the VM.

use serde::{Deserialize, Serialize};

use crate::workload::WorkerReport;

/// The figure a check judged and the threshold it held it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub value: f64,
    /// The limit it was held to.
    pub threshold: f64,
    /// Their unit (`ms`, `%`, `CPUs`, `/s`).
    pub unit: String,
}

impl Figure {
    /// `value` against `threshold`, in `unit`.
    pub fn new(value: f64, threshold: f64, unit: &str) -> Self {
        Figure {
            value,
            threshold,
            unit: unit.to_string(),
        }
    }
}

/// One finding of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// The check that made it (`starvation`, `fairness`, `body`, ...).
    pub check: String,
    /// What it found, with the figure and the threshold.
    pub message: String,
    /// Whether it is a failure.
    pub failed: bool,
    /// The figure and threshold, for checks that measure one.
    #[serde(default)]
    pub figure: Option<Figure>,
}

/// The verdict of a test body or a check: pass or fail, with details, and the
/// reports of the workers it judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssertResult {
    details: Vec<Detail>,
    /// Reasons the verdict cannot be trusted (e.g. timing with more vCPUs than
    /// host cores); a failing verdict with reasons here is reported inconclusive.
    inconclusive: Vec<String>,
    /// Every worker's figures, printed as a table when the verdict fails.
    #[serde(default)]
    workers: Vec<WorkerReport>,
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
                figure: None,
            }],
            ..Self::default()
        }
    }

    /// A failing verdict from `check`, with the figure it judged.
    pub fn fail_with(check: &str, message: impl Into<String>, figure: Figure) -> Self {
        let mut v = Self::fail(check, message);
        v.details[0].figure = Some(figure);
        v
    }

    /// Adds an informational (passing) detail.
    pub fn note(mut self, check: &str, message: impl Into<String>) -> Self {
        self.details.push(Detail {
            check: check.to_string(),
            message: message.into(),
            failed: false,
            figure: None,
        });
        self
    }

    /// Adds an informational (passing) detail with the figure it judged.
    pub fn note_with(mut self, check: &str, message: impl Into<String>, figure: Figure) -> Self {
        self.details.push(Detail {
            check: check.to_string(),
            message: message.into(),
            failed: false,
            figure: Some(figure),
        });
        self
    }

    /// Attaches worker reports (the structured figures behind the verdict).
    pub fn with_workers(mut self, reports: impl IntoIterator<Item = WorkerReport>) -> Self {
        self.workers.extend(reports);
        self
    }

    /// The worker reports attached to the verdict.
    pub fn workers(&self) -> &[WorkerReport] {
        &self.workers
    }

    /// Whether any failing detail comes from `check`.
    pub fn failed_check(&self, check: &str) -> bool {
        self.failures().any(|d| d.check == check)
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
        self.workers.extend(other.workers);
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
        if !self.is_pass() && !self.workers.is_empty() {
            write!(f, "\n  workers:")?;
            for line in crate::checks::table(&self.workers).lines() {
                write!(f, "\n    {line}")?;
            }
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
