//! Why a `cargo ktstr` subcommand failed: one enum for the binary, each
//! variant naming its input and, for a mistake of the user's, the fix.
//! `main` prints it after `cargo ktstr: error: `.

use std::path::PathBuf;

use ktstr_kernel::{KernelError, SpecError};

/// Why a `cargo ktstr` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    // Files and commands.
    /// A file or directory could not be read, written or made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A temporary file or directory could not be made.
    #[error("cannot make a temporary file: {source}")]
    Temp {
        /// The OS error.
        source: std::io::Error,
    },
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command, as `Command`'s `Debug` shows it.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{command} failed: {stderr}")]
    CommandFailed {
        /// The command.
        command: String,
        /// Its error output, trimmed.
        stderr: String,
    },
    /// A command printed something other than the JSON asked for.
    #[error("{command} printed no JSON: {source}")]
    NoJson {
        /// The command (`cargo metadata`, `nextest list`).
        command: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A command's JSON lacks a field.
    #[error("{command} printed no {field}")]
    MissingField {
        /// The command.
        command: &'static str,
        /// The field.
        field: &'static str,
    },
    /// Something of ours did not serialize (a bug).
    #[error("{what} does not serialize: {source}")]
    Serialize {
        /// What.
        what: &'static str,
        /// serde's complaint.
        source: serde_json::Error,
    },
    /// `cargo metadata` failed: not in a cargo package.
    #[error("cargo metadata failed (run cargo ktstr inside a cargo package): {stderr}")]
    Metadata {
        /// cargo's error output.
        stderr: String,
    },
    /// The test targets did not build.
    #[error("building the tests failed (see cargo's messages above)")]
    BuildFailed,

    // Other crates.
    /// The host configuration (the `KTSTR_*` environment) is not valid.
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    /// A recording could not be read or replayed.
    #[error(transparent)]
    Recording(#[from] ktstr::recording::RecordingError),
    /// `replay RUN/TEST` names no recording.
    #[error(
        "{given}: no recording there (looked for {}); a failing test's recording is kept when \
         the run was recorded (cargo ktstr test --record); `cargo ktstr replay --list` lists them",
        looked.display()
    )]
    NoRecording {
        /// The argument.
        given: String,
        /// The directory looked for.
        looked: PathBuf,
    },
    /// Resolving, fetching or building a kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A `kernel` subcommand failed.
    #[error(transparent)]
    KernelCmd(#[from] ktstr_kernel::cli::KernelCmdError),
    /// A command shared with the `ktstr` binary failed.
    #[error(transparent)]
    Cli(#[from] ktstr_cli::CmdError),
    /// A duration (`--budget`) is not one.
    #[error(transparent)]
    Duration(#[from] crate::select::DurationError),
    /// `--shard` or `--partition` is not one.
    #[error(transparent)]
    ShardArg(#[from] crate::shard::ShardArgError),

    // Flags.
    /// `--kernel` is not a kernel spec.
    #[error("--kernel {given}: {why}")]
    BadKernelSpec {
        /// The spec as given.
        given: String,
        /// What is wrong with it.
        why: SpecError,
    },
    /// `--kernel PATH` that does not exist.
    #[error(
        "--kernel {}: no such file or directory (give a vmlinux, bzImage, build tree or cache \
         entry; `cargo ktstr kernel list` shows the cache)",
        path.display()
    )]
    NoKernelPath {
        /// The path given.
        path: PathBuf,
    },
    /// A replay's `--at`, `--every`, `--from`, `--to` or `--show` is malformed.
    #[error("cargo ktstr replay: {0}")]
    ReplayOption(String),
    /// `--backend` names no backend.
    #[error("--backend {backend}: expected kvm, qemu or auto")]
    BadBackend {
        /// The backend as given.
        backend: String,
    },
    /// `--topology` or `--preset` of no preset.
    #[error("--{flag} {preset}: not a preset (`cargo ktstr topo` lists them)")]
    NotAPreset {
        /// The flag.
        flag: &'static str,
        /// The preset as given.
        preset: String,
    },
    /// `--machines 0`.
    #[error("--machines 0: give the number of {what}")]
    ZeroMachines {
        /// What the number counts.
        what: &'static str,
    },

    // The results store.
    /// A run that is not in the store.
    #[error(
        "run {run:?} is not in {} (`cargo ktstr stats list` lists the runs)",
        store.display()
    )]
    NoSuchRun {
        /// The run as given.
        run: String,
        /// The store.
        store: PathBuf,
    },
    /// `report` of a store with no run.
    #[error("no run in {} yet (run `cargo ktstr test` first)", store.display())]
    EmptyStore {
        /// The store.
        store: PathBuf,
    },

    // test, gauntlet.
    /// `--topology P` where no test has a variant on P.
    #[error(
        "no test has a gauntlet variant on preset {preset} (its constraints exclude it, or the \
         filters match none)"
    )]
    NoVariantOnPreset {
        /// The preset.
        preset: String,
    },

    // stats compare.
    /// A side of `kernel:SPEC` with a spec that is not one.
    #[error("side {side:?}: {why}")]
    BadSideKernel {
        /// The side as given.
        side: String,
        /// What is wrong with the spec.
        why: SpecError,
    },
    /// A side of `kernel:SPEC` that names several kernels.
    #[error("side {side:?} names {count} kernels; a side is one kernel")]
    SideKernels {
        /// The side as given.
        side: String,
        /// How many kernels it names.
        count: usize,
    },
    /// A side of no known form.
    #[error(
        "side {side:?}: a side is run:ID[,ID..], kernel:SPEC (7.3, 7.0.13 or a path) or \
         scheduler:[BINARY] [ARGS..]"
    )]
    BadSide {
        /// The side as given.
        side: String,
    },
    /// A scheduler binary given by path that is not a file.
    #[error("scheduler binary {name}: no such file")]
    NoSuchBinary {
        /// The path given.
        name: String,
    },
    /// A scheduler binary given by name found nowhere.
    #[error(
        "scheduler binary {name} not found in {}/{{debug,release}} nor PATH (build it, e.g. \
         `cargo build --bin {name}`, or give its path)",
        target.display()
    )]
    BinaryNotFound {
        /// The name given.
        name: String,
        /// The target directory searched.
        target: PathBuf,
    },
    /// `--alpha` outside (0, 1).
    #[error("--alpha {alpha}: expected a level between 0 and 1")]
    BadAlpha {
        /// The level as given.
        alpha: f64,
    },
    /// `--figure` of no figure.
    #[error("--figure {figure}: not a figure (known: {})", known.join(", "))]
    NotAFigure {
        /// The figure as given.
        figure: String,
        /// The figures there are.
        known: Vec<&'static str>,
    },
    /// A side that runs a test, and no `--test-name`.
    #[error("kernel: and scheduler: sides run a test: name it with --test-name")]
    NeedsTestName,
    /// `--reps 0`.
    #[error("--reps 0: each side needs runs")]
    ZeroReps,
    /// No figure has two values a side.
    #[error(
        "no figure has two values on each side (A: {a} record(s), B: {b}); the test must report \
         workers (e.g. scenarios::steady)"
    )]
    TooFewValues {
        /// Records of side A.
        a: usize,
        /// Records of side B.
        b: usize,
    },
    /// A run with no record of the test.
    #[error(
        "run {run} has no record{} in {} (did the test run? see the output above)",
        test.as_ref().map(|t| format!(" of {t}")).unwrap_or_default(),
        store.display()
    )]
    NoRecords {
        /// The run.
        run: String,
        /// The test named, if any.
        test: Option<String>,
        /// The store.
        store: PathBuf,
    },

    // bisect.
    /// `bisect --kernel` that is not a range.
    #[error("--kernel {kernel}: bisect needs a range of releases, e.g. --kernel 7.0..7.3")]
    NotARange {
        /// The spec as given.
        kernel: String,
    },
    /// A range of fewer than two releases.
    #[error("--kernel {kernel}: {count} release(s) in the range; bisect needs two or more")]
    TooFewReleases {
        /// The range as given.
        kernel: String,
        /// Releases in it.
        count: usize,
    },
    /// The bisected test wrote no record.
    #[error(
        "no test matching {test:?} wrote a record on {release} (check the name: `cargo test -- \
         --list`)"
    )]
    NoBisectRecord {
        /// The test as given.
        test: String,
        /// The release it ran on.
        release: String,
    },

    // archive, run --archive.
    /// An archive that cannot be read.
    #[error(
        "{}: damaged or not a ktstr archive ({why}); copy it again, or make it again with \
         `cargo ktstr archive`",
        file.display()
    )]
    Damaged {
        /// The archive.
        file: PathBuf,
        /// What is wrong in it.
        why: crate::archive::Damage,
    },
    /// An archive of another cargo-ktstr.
    #[error(
        "{}: made by cargo-ktstr {version} (archive format {format}), this is cargo-ktstr {} \
         (format {}): run it with cargo-ktstr {version}, or make the archive again with this one",
        file.display(),
        crate::shard::KTSTR_VERSION,
        crate::shard::FORMAT
    )]
    OtherVersion {
        /// The archive.
        file: PathBuf,
        /// The cargo-ktstr that made it.
        version: String,
        /// Its archive format.
        format: u32,
    },
    /// The compressor thread of `archive` panicked.
    #[error("the compressor thread panicked")]
    CompressorPanicked,
    /// cargo-nextest is not installed.
    #[error("cargo-nextest is not in PATH: archives are nextest archives (install cargo-nextest)")]
    NoNextest,
    /// `run --archive` of an archive without cargo-nextest, none installed.
    #[error("no cargo-nextest: give --nextest")]
    NoNextestGiven,
    /// `cargo nextest archive` failed.
    #[error("cargo nextest archive failed (see its messages above)")]
    NextestArchiveFailed,
    /// The filters left no test.
    #[error("the archive has no test to run (check -p and -E)")]
    NoTests,
    /// `--budget` without `--machines`.
    #[error("--budget needs --machines: the budget is each machine's")]
    BudgetNeedsMachines,
    /// A package directory outside the workspace.
    #[error("package directory {dir:?} leaves the workspace")]
    PackageDirLeaves {
        /// The directory, relative to the workspace root.
        dir: String,
    },
    /// `--installed-scheduler` of a scheduler not installed.
    #[error(
        "--installed-scheduler {name}: {} is not installed (`cargo xtask schedulers` in the ktstr \
         repository installs the published ones)",
        path.display()
    )]
    NotInstalled {
        /// The name given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A shard's directory already holds a shard's results.
    #[error("{}: a shard ran here already; give each shard its own --dir", dir.display())]
    ShardRanHere {
        /// The results directory.
        dir: PathBuf,
    },
    /// An archive of several kernels, and no `--kernel`.
    #[error("the archive has {} kernels: pick one with --kernel ({})", labels.len(), labels.join(", "))]
    PickKernel {
        /// The packed kernels' labels.
        labels: Vec<String>,
    },
    /// `--kernel` of no packed kernel.
    #[error("--kernel {spec}: not in the archive (it has {})", labels.join(", "))]
    KernelNotPacked {
        /// The label as given.
        spec: String,
        /// The packed kernels' labels.
        labels: Vec<String>,
    },
    /// `--kernel` of a line several packed kernels are of.
    #[error(
        "--kernel {spec}: several packed kernels are of it ({}); give one label",
        labels.join(", ")
    )]
    KernelAmbiguous {
        /// The line as given.
        spec: String,
        /// The packed kernels' labels.
        labels: Vec<String>,
    },
    /// Both `--shard` and `--partition`.
    #[error("give --shard or --partition, not both")]
    ShardAndPartition,
    /// `--shard` of an archive without a plan.
    #[error("--shard: the archive has no plan (make it with --machines N)")]
    NoPlan,
    /// `PATH` cannot take the directory of packed schedulers.
    #[error("PATH with {}: {source}", dir.display())]
    JoinPaths {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::env::JoinPathsError,
    },
    /// A test binary failed to list its declared schedulers.
    #[error("{} failed listing its schedulers: {stderr}", bin.display())]
    ListSchedulers {
        /// The test binary.
        bin: PathBuf,
        /// Its error output.
        stderr: String,
    },
    /// A test binary's list of declared schedulers is not JSON of one.
    #[error("{}'s scheduler list: {source}", bin.display())]
    SchedulerList {
        /// The test binary.
        bin: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },

    // merge.
    /// `merge` without directories.
    #[error("merge: give the shards' directories")]
    NoShards,
    /// A directory that is not a results store.
    #[error(
        "{}: not a results store (no runs/ or {} in it or in its results/); give the directory a \
         shard wrote",
        dir.display(),
        crate::shard::SHARD_MANIFEST
    )]
    NotAStore {
        /// The directory given.
        dir: PathBuf,
    },
    /// A shard manifest that is not one.
    #[error("{}: not a shard manifest ({source}); it is damaged: run the shard again", file.display())]
    BadShardManifest {
        /// The manifest.
        file: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// Records of a shard that cannot be read.
    #[error(
        "{first}; {count} record(s) of {} cannot be read: repair or remove them, or run the shard \
         again",
        store.display()
    )]
    UnreadableRecords {
        /// The first one's error.
        first: ktstr_record::RecordError,
        /// How many.
        count: usize,
        /// The shard's store.
        store: PathBuf,
    },
    /// The merged run exists already.
    #[error("{}: exists; merge into a new run", dir.display())]
    RunExists {
        /// The run's directory.
        dir: PathBuf,
    },
    /// A merged record does not serialize (a bug).
    #[error("the record of {test} does not serialize: {source}")]
    RecordNotSerialized {
        /// The record's test.
        test: String,
        /// serde's complaint.
        source: serde_json::Error,
    },
    /// Shards that cannot be merged (of different archives or versions).
    #[error("{}", problems.join("\n"))]
    MergeRefused {
        /// Every problem merging found, one line each.
        problems: Vec<String>,
    },
    /// `--run` that is not a run id.
    #[error("--run {run:?}: letters, digits, - _ . only")]
    BadRunId {
        /// The id as given.
        run: String,
    },

    // ci.
    /// `ci` of an unknown system.
    #[error("ci {system}: expected github or gitlab")]
    UnknownCiSystem {
        /// The system as given.
        system: String,
    },
    /// A file that exists, without `--force`.
    #[error("{}: exists; give --force to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },

    // verifier.
    /// `--update-baseline` without `--baseline`.
    #[error("--update-baseline needs --baseline FILE")]
    UpdateNeedsBaseline,
    /// A scheduler that is neither a file nor installed.
    #[error(
        "scheduler {name:?} is neither a file nor installed at {} (build it, e.g. cargo xtask \
         schedulers --only {name})",
        installed.display()
    )]
    SchedulerNotFound {
        /// The name given.
        name: String,
        /// Where an installed one would be.
        installed: PathBuf,
    },
    /// A baseline file that is not one.
    #[error(
        "baseline {}: {source} (expected {{\"programs\": {{\"sched/prog@kernel\": {{\"insns\": \
         N}}}}}}; --update-baseline writes one)",
        path.display()
    )]
    BadBaseline {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
}

impl CmdError {
    /// An [`CmdError::Io`] of `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CmdError::Io {
            path: path.into(),
            source,
        }
    }
}
