//! `cargo ktstr`: run a package's ktstr tests with settings as flags, run the
//! topology gauntlet within a time budget, and compare stored results A/B.
//!
//! Install: `cargo install --path facade/cargo-ktstr` (from a ktstr
//! checkout); then `cargo ktstr --help` in any package that takes `ktstr` as
//! a dev-dependency.

mod archive;
mod bisect;
mod cargo;
mod child;
mod ci;
mod compare;
mod declared;
mod error;
mod html;
mod html_dump;
#[cfg(test)]
mod junit_schema;
mod merge;
mod placement;
mod portable;
mod replay;
mod report;
mod runs;
mod select;
mod shard;
mod store;
#[cfg(test)]
mod trace_format;
mod verifier;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// Test Linux schedulers in VMs: the package's ktstr tests, the topology
/// gauntlet, stored results and their A/B comparison.
#[derive(FromArgs, Debug)]
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Cmd {
    Test(TestCmd),
    Gauntlet(GauntletCmd),
    Bisect(BisectCmd),
    Stats(StatsCmd),
    Report(ReportCmd),
    Merge(MergeCmd),
    Archive(ArchiveCmd),
    Run(RunArchiveCmd),
    Ci(CiCmd),
    Kernel(ktstr_kernel::cli::KernelCmd),
    Shell(ktstr_cli::ShellCmd),
    Topo(ktstr_cli::TopoCmd),
    Probe(ktstr_cli::ProbeCmd),
    Verifier(verifier::VerifierCmd),
    Replay(replay::ReplayCmd),
}

/// Run the package's tests (nextest when installed, else cargo test); each
/// test writes one record to the results store (target/ktstr/runs/<run>/).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "test")]
pub struct TestCmd {
    #[argh(option)]
    /// kernel to boot: a version (7.3, 7.0.13, newest), a range (6.18..7.3:
    /// the newest of each line), a vmlinux, bzImage, build tree or cache
    /// entry, a kernel source tree, git+URL#sha=S|tag=T|branch=B or
    /// source:7.3 (built with ktstr's fragment); versions are fetched when
    /// not cached; repeat it to run everything once per kernel (default:
    /// KTSTR_KERNEL, then the newest cached)
    kernel: Vec<ktstr_kernel::KernelSpec>,
    #[argh(option)]
    /// a kconfig fragment for kernels built from source, after ktstr's
    kconfig: Option<std::path::PathBuf>,
    #[argh(switch)]
    /// a --kernel range gives every release in it, not the newest of each line
    all_releases: bool,
    #[argh(option)]
    /// run the gauntlet variants on this preset instead (`cargo ktstr topo`
    /// lists the presets)
    topology: Option<String>,
    #[argh(option)]
    /// after the tests, run gauntlet variants picked to fit this budget
    /// (e.g. 20m)
    budget: Option<String>,
    #[argh(switch)]
    /// an inconclusive verdict does not fail a test
    allow_inconclusive: bool,
    #[argh(switch)]
    /// boot every test cold, never from a snapshot of a booted guest
    no_restore: bool,
    #[argh(switch)]
    /// print the scheduler's state dump after passing tests too (failing ones
    /// always get it)
    dump: bool,
    #[argh(switch)]
    /// record every test's VM (QEMU TCG, booted cold) and keep the failing
    /// tests' recordings for `cargo ktstr replay`
    record: bool,
    #[argh(option)]
    /// VM backend: kvm, qemu or auto (default auto)
    backend: Option<String>,
    #[argh(switch, short = 'v')]
    /// echo the guests' consoles
    verbose: bool,
    #[argh(option)]
    /// host cores VMs may use at once (default: all)
    host_cpus: Option<u32>,
    #[argh(option)]
    /// monitor samples per second, 0 for none (default 10)
    monitor_hz: Option<u32>,
    #[argh(option, short = 'p')]
    /// package to test (repeatable; default: the one here)
    package: Vec<String>,
    #[argh(option)]
    /// integration test target to run (repeatable; default: all)
    test: Vec<String>,
    #[argh(switch)]
    /// test every package of the workspace
    workspace: bool,
    #[argh(switch)]
    /// use cargo test even when nextest is installed
    no_nextest: bool,
    #[argh(positional, greedy)]
    /// test name filters, passed to nextest or libtest
    filters: Vec<String>,
}

/// Run every #[ktstr_test] on the topology presets its constraints allow
/// (variants gauntlet/<test>/<preset>), all of them or those that cover the
/// most (test, shape feature) pairs per expected second within --budget.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "gauntlet")]
pub struct GauntletCmd {
    #[argh(switch)]
    /// list the variants (with their features and expected seconds) and stop
    list: bool,
    #[argh(option)]
    /// time budget, e.g. 3m or 1h30m: pick the variants that fit
    budget: Option<String>,
    #[argh(option)]
    /// print a split of the picked variants into this many shards, each
    /// within --budget, balanced by expected seconds, and stop (`cargo ktstr
    /// archive --gauntlet -E 'test(/::gauntlet::/)' --budget B --machines N`
    /// packs the same split)
    machines: Option<usize>,
    #[argh(option)]
    /// only variants on this preset (repeatable)
    preset: Vec<String>,
    #[argh(option)]
    /// kernel to boot, as for `test` (repeatable, ranges too: the kernel
    /// becomes a dimension of the run, and --budget counts it)
    kernel: Vec<ktstr_kernel::KernelSpec>,
    #[argh(option)]
    /// a kconfig fragment for kernels built from source, after ktstr's
    kconfig: Option<std::path::PathBuf>,
    #[argh(switch)]
    /// a --kernel range gives every release in it, not the newest of each line
    all_releases: bool,
    #[argh(switch)]
    /// an inconclusive verdict does not fail a variant
    allow_inconclusive: bool,
    #[argh(switch)]
    /// boot every variant cold, never from a snapshot of a booted guest
    no_restore: bool,
    #[argh(option)]
    /// VM backend: kvm, qemu or auto (default auto)
    backend: Option<String>,
    #[argh(switch, short = 'v')]
    /// echo the guests' consoles
    verbose: bool,
    #[argh(option, short = 'p')]
    /// package (repeatable; default: the one here)
    package: Vec<String>,
    #[argh(option)]
    /// integration test target (repeatable; default: all)
    test: Vec<String>,
    #[argh(switch)]
    /// use cargo test even when nextest is installed
    no_nextest: bool,
    #[argh(positional, greedy)]
    /// only variants whose name contains one of these (gauntlet/<test>/<preset>
    /// or <test>::gauntlet::<preset>)
    filters: Vec<String>,
}

/// Find the first kernel release where a test's verdict changes: run the
/// test on releases of a range (every release, fetched as needed) by binary
/// search, at most ceil(log2(N)) + 2 runs, and show both verdicts.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bisect")]
pub struct BisectCmd {
    #[argh(positional)]
    /// the test: every test whose name contains this runs (ignored ones too)
    test: String,
    #[argh(option)]
    /// the releases, as a range: 7.0..7.3, 6.18.5..6.18.15
    kernel: ktstr_kernel::KernelSpec,
    #[argh(option, short = 'p')]
    /// package (repeatable; default: the one here)
    package: Vec<String>,
    #[argh(option, long = "test")]
    /// integration test target (repeatable; default: all)
    test_target: Vec<String>,
    #[argh(switch)]
    /// an inconclusive verdict does not fail a run
    allow_inconclusive: bool,
    #[argh(switch)]
    /// boot every run cold, never from a snapshot of a booted guest
    no_restore: bool,
    #[argh(option)]
    /// VM backend: kvm, qemu or auto (default auto)
    backend: Option<String>,
    #[argh(switch)]
    /// use only kernels already cached
    offline: bool,
    #[argh(switch)]
    /// use cargo test even when nextest is installed
    no_nextest: bool,
}

/// Write a run's reports under <store>/reports/<run>/: report.html (verdict
/// table, failures, SVG plots per test), junit.xml (one testcase per test
/// and variant) and trace.json (Chrome trace events; Perfetto's UI opens it).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "report")]
pub struct ReportCmd {
    #[argh(positional)]
    /// the run (default: the newest)
    run: Option<String>,
    #[argh(option)]
    /// the results store (default: <target dir>/ktstr)
    store: Option<PathBuf>,
}

/// Pack the package's tests for machines without its source or a Rust
/// toolchain: the nextest archive of the test binaries, the kernels their
/// VMs boot, the cargo-nextest that runs them and a manifest (this
/// cargo-ktstr's version, the kernels, the tests, a split into shards
/// balanced by expected seconds with --machines). Run it with `cargo ktstr
/// run --archive`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "archive")]
pub struct ArchiveCmd {
    #[argh(option, short = 'o')]
    /// the archive to write (e.g. run.tar.zst)
    out: PathBuf,
    #[argh(option)]
    /// kernel to pack, as for `test` (repeatable: a shard runs one of them;
    /// default: KTSTR_KERNEL, then the newest cached)
    kernel: Vec<ktstr_kernel::KernelSpec>,
    #[argh(switch)]
    /// include the gauntlet's variants (ignored tests)
    gauntlet: bool,
    #[argh(option, short = 'E')]
    /// a nextest filterset every shard applies
    filter: Option<String>,
    #[argh(option)]
    /// split the tests into this many shards balanced by their expected
    /// seconds (recorded runs, else the model); run one with --shard K/N
    machines: Option<usize>,
    #[argh(option)]
    /// with --machines and --gauntlet: keep only the variants that let each
    /// shard finish within this time (e.g. 20m), picked as `gauntlet
    /// --budget B --machines N` picks them
    budget: Option<String>,
    #[argh(option)]
    /// an installed scheduler of the ktstr cache to pack (repeatable)
    installed_scheduler: Vec<String>,
    #[argh(option, short = 'p')]
    /// package (repeatable; default: the one here)
    package: Vec<String>,
    #[argh(option)]
    /// integration test target (repeatable; default: all)
    test: Vec<String>,
    #[argh(switch)]
    /// every package of the workspace
    workspace: bool,
}

impl ArchiveCmd {
    fn filter_args(&self) -> Vec<String> {
        shard::filter_args(self.filter.as_deref())
    }
}

/// Run one shard of an archive of `cargo ktstr archive` (no source, cargo
/// or Rust toolchain needed; QEMU or KVM is): unpack it into --dir, run the
/// tests of the shard with the packed kernel and write the results store
/// --dir/results with a shard.json for `cargo ktstr merge`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArchiveCmd {
    #[argh(option)]
    /// the archive
    archive: PathBuf,
    #[argh(option)]
    /// a nextest partition: hash:K/N, count:K/N or slice:K/N
    partition: Option<String>,
    #[argh(option)]
    /// shard K/N of the archive's balanced plan (made with --machines N)
    shard: Option<String>,
    #[argh(option)]
    /// the packed kernel to boot, by label (needed when it has several)
    kernel: Option<String>,
    #[argh(option)]
    /// the shard's directory (default ktstr-shard): archive/, results/, cache/
    dir: Option<PathBuf>,
    #[argh(option)]
    /// the ktstr cache (kernels' indexes, initramfs, snapshots; default
    /// <dir>/cache)
    cache_dir: Option<PathBuf>,
    #[argh(option)]
    /// the cargo-nextest binary (default: the one packed)
    nextest: Option<PathBuf>,
    #[argh(switch)]
    /// an inconclusive verdict does not fail a test
    allow_inconclusive: bool,
    #[argh(option)]
    /// VM backend: kvm, qemu or auto (default auto)
    backend: Option<String>,
    #[argh(option)]
    /// host cores VMs may use at once (default: all)
    host_cpus: Option<u32>,
    #[argh(switch, short = 'v')]
    /// echo the guests' consoles
    verbose: bool,
}

/// Write a CI workflow: a job that builds and packs the tests (`archive`),
/// a matrix of kernels x shards that runs them (`run --archive`) on
/// machines with QEMU and no Rust toolchain, and a job that merges the
/// shards and publishes the report and the JUnit XML.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ci")]
pub struct CiCmd {
    #[argh(positional)]
    /// github or gitlab
    system: String,
    #[argh(option)]
    /// kernel of the matrix (repeatable; default 7.3)
    kernel: Vec<String>,
    #[argh(option, default = "3")]
    /// shards per kernel (default 3)
    machines: usize,
    #[argh(option)]
    /// each shard's time budget (e.g. 20m): the gauntlet's variants that fit
    budget: Option<String>,
    #[argh(switch)]
    /// run the gauntlet's variants too
    gauntlet: bool,
    #[argh(option)]
    /// how the build job installs cargo-ktstr (default: cargo install
    /// --locked cargo-ktstr --version <this version>)
    install: Option<String>,
    #[argh(option, short = 'o')]
    /// the file (default .github/workflows/ktstr.yml or .gitlab-ci.yml)
    out: Option<PathBuf>,
    #[argh(switch)]
    /// overwrite the file
    force: bool,
}

/// Join the results of shards (`cargo ktstr run --archive` on N machines)
/// into one run of one results store, with report.html, junit.xml and
/// trace.json; names tests no shard ran, tests two shards ran and shards
/// that did not finish (exit 1 then).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "merge")]
pub struct MergeCmd {
    #[argh(positional)]
    /// the shards' directories (or results stores)
    dirs: Vec<PathBuf>,
    #[argh(option, short = 'o')]
    /// the results store to write the merged run into (default ktstr-merged)
    out: Option<PathBuf>,
    #[argh(option)]
    /// the merged run's id (default: the time, the pid and -merged)
    run: Option<String>,
}

/// The results store: list runs, compare two sides.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
pub struct StatsCmd {
    #[argh(subcommand)]
    cmd: StatsSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum StatsSub {
    List(ListCmd),
    Compare(CompareCmd),
}

/// List the stored runs, or the records of one run with their key figures.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCmd {
    #[argh(option)]
    /// show this run's records
    run: Option<String>,
    #[argh(option)]
    /// the results store (default: <target dir>/ktstr)
    store: Option<PathBuf>,
}

/// Compare key figures of one test between two sides, repeated runs each;
/// exit 1 on a regression of B against A. A side is `run:ID[,ID..]` (stored
/// runs), `kernel:SPEC` (a version such as 7.3, or a path) or `scheduler:[BINARY] [ARGS..]` (run --reps times
/// with that kernel, or with that scheduler binary and extra arguments).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "compare")]
pub struct CompareCmd {
    #[argh(option)]
    /// side A, the baseline
    a: String,
    #[argh(option)]
    /// side B, the candidate
    b: String,
    #[argh(option)]
    /// the test (libtest name, e.g. steady_under_scx_ktstr); required for
    /// kernel: and scheduler: sides
    test_name: Option<String>,
    #[argh(option, default = "5")]
    /// runs per side for kernel: and scheduler: sides (default 5; at least 4
    /// for the test to be able to reach p < 0.05)
    reps: usize,
    #[argh(option)]
    /// compare only these figures (repeatable; default: every one both sides have)
    figure: Vec<String>,
    #[argh(option, default = "0.05")]
    /// significance level, shared by the figures (default 0.05)
    alpha: f64,
    #[argh(option, short = 'p')]
    /// package (repeatable; default: the one here)
    package: Vec<String>,
    #[argh(option)]
    /// integration test target (repeatable)
    test: Vec<String>,
    #[argh(switch)]
    /// an inconclusive verdict does not fail a run (its figures count)
    allow_inconclusive: bool,
    #[argh(switch)]
    /// use cargo test even when nextest is installed
    no_nextest: bool,
    #[argh(option)]
    /// the results store (default: <target dir>/ktstr)
    store: Option<PathBuf>,
}

/// What a subcommand ended with.
#[derive(Debug)]
pub enum Done {
    /// Everything passed.
    Ok,
    /// Tests failed, or a comparison found a regression.
    Failed(String),
}

fn main() -> ExitCode {
    // In a shell VM this binary is the guest's init: that never returns.
    ktstr::shell::agent_main();
    // `cargo ktstr ...` runs `cargo-ktstr ktstr ...`.
    let args: Vec<String> = std::env::args().collect();
    let skip = if args.get(1).map(String::as_str) == Some("ktstr") {
        2
    } else {
        1
    };
    let rest: Vec<&str> = args[skip.min(args.len())..]
        .iter()
        .map(String::as_str)
        .collect();
    let cli = match Cli::from_args(&["cargo ktstr"], &rest) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}\nRun cargo ktstr --help for help.", early.output.trim());
                    ExitCode::from(2)
                }
            };
        }
    };
    let done = match cli.cmd {
        Cmd::Test(c) => runs::test(&c),
        Cmd::Gauntlet(c) => runs::gauntlet(&c),
        Cmd::Bisect(c) => bisect::bisect(&c),
        Cmd::Stats(StatsCmd {
            cmd: StatsSub::List(c),
        }) => runs::stats_list(&c),
        Cmd::Stats(StatsCmd {
            cmd: StatsSub::Compare(c),
        }) => runs::stats_compare(&c),
        Cmd::Report(c) => runs::report(&c),
        Cmd::Replay(c) => replay::run(&c),
        Cmd::Merge(c) => merge::run(&c),
        Cmd::Archive(c) => portable::archive(&c),
        Cmd::Run(c) => portable::run(&c),
        Cmd::Ci(c) => ci::run(&c),
        Cmd::Kernel(k) => host().and_then(|h| {
            k.run("cargo ktstr", &h.kernel_cmd_env())?;
            Ok(Done::Ok)
        }),
        Cmd::Shell(c) => {
            return match host().and_then(|h| Ok(ktstr_cli::shell(c, &h)?)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("cargo ktstr: error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Topo(c) => ktstr_cli::topo(&c).map(|()| Done::Ok).map_err(Into::into),
        Cmd::Probe(c) => host().and_then(|h| {
            ktstr_cli::probe(&c, &h)?;
            Ok(Done::Ok)
        }),
        Cmd::Verifier(c) => verifier::verifier(&c),
    };
    match done {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Failed(why)) => {
            eprintln!("cargo ktstr: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cargo ktstr: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The host configuration from the environment.
fn host() -> Result<ktstr::config::HostConfig, error::CmdError> {
    Ok(ktstr::config::HostConfig::from_env()?)
}
