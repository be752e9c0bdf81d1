//! What a run came to, as a test of the harness and `post_vm` read it:
//! pass, fail or inconclusive, with its text. The verdict module decides it;
//! this leaf module only names it, so the monitor's `VmResult` can carry it
//! without depending on the verdict.

/// Whether a run passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// It passed (or failed as `expect_err` wanted).
    Pass,
    /// It failed.
    Fail,
    /// Its verdict depends on timing the VM could not provide, and the test
    /// or the run accepts that.
    Inconclusive,
}

/// The outcome of one test VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed (or failed as `expect_err` wanted).
    Pass(String),
    /// The test failed.
    Fail(String),
    /// The verdict depends on timing the VM could not provide.
    Inconclusive(String),
}

impl Outcome {
    /// The outcome of `kind`, with `text`.
    pub fn of(kind: Kind, text: String) -> Outcome {
        match kind {
            Kind::Pass => Outcome::Pass(text),
            Kind::Fail => Outcome::Fail(text),
            Kind::Inconclusive => Outcome::Inconclusive(text),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Outcome::Pass(_) => Kind::Pass,
            Outcome::Fail(_) => Kind::Fail,
            Outcome::Inconclusive(_) => Kind::Inconclusive,
        }
    }

    /// Its text.
    pub fn text(&self) -> &str {
        match self {
            Outcome::Pass(t) | Outcome::Fail(t) | Outcome::Inconclusive(t) => t,
        }
    }
}
