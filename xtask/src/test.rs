//! `cargo xtask test` (the whole suite) and `cargo xtask demo` (the main job).
//!
//! Both start with set-up and the kernel fetch, so a fresh machine needs no
//! other step; each phase prints how long it took.

use std::process::Command;
use std::time::{Duration, Instant};

use argh::FromArgs;

/// Set-up, kernel fetch, fmt check, clippy, docs and every test of every crate.
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
pub struct TestCmd {
    /// skip `cargo xtask setup` (for quick iteration on a prepared machine)
    #[argh(switch)]
    no_setup: bool,
    /// use the cached kernel only, never the network
    #[argh(switch)]
    offline: bool,
}

/// Set-up, kernel fetch, then the example tests with a verdict table.
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
pub struct DemoCmd {
    /// skip `cargo xtask setup`
    #[argh(switch)]
    no_setup: bool,
    /// use the cached kernel only, never the network
    #[argh(switch)]
    offline: bool,
}

/// One timed phase and how it ended.
struct Phase {
    name: &'static str,
    took: Duration,
    ok: bool,
}

#[derive(Default)]
struct Phases(Vec<Phase>);

impl Phases {
    /// Runs `f` as phase `name`, printing its start and duration.
    fn run(&mut self, name: &'static str, f: impl FnOnce() -> Result<(), String>) -> bool {
        println!("==> {name}");
        let t0 = Instant::now();
        let res = f();
        let took = t0.elapsed();
        let ok = res.is_ok();
        match res {
            Ok(()) => println!("==> {name}: ok in {:.1}s", took.as_secs_f64()),
            Err(e) => println!("==> {name}: FAILED in {:.1}s: {e}", took.as_secs_f64()),
        }
        self.0.push(Phase { name, took, ok });
        ok
    }

    fn summary(&self) -> Result<(), String> {
        println!("\nphase                         time  result");
        let mut total = Duration::ZERO;
        for p in &self.0 {
            total += p.took;
            let verdict = if p.ok { "ok" } else { "FAILED" };
            println!("{:<26} {:>7.1}s  {verdict}", p.name, p.took.as_secs_f64());
        }
        println!("{:<26} {:>7.1}s", "total", total.as_secs_f64());
        let failed: Vec<&str> = self.0.iter().filter(|p| !p.ok).map(|p| p.name).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("failed phases: {}", failed.join(", ")))
        }
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Run from the workspace root whatever the caller's directory.
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

fn status(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {st}"))
    }
}

/// Set-up and kernel fetch, shared by `test` and `demo`; false if either failed.
fn prepare(phases: &mut Phases, no_setup: bool, offline: bool) -> bool {
    if !no_setup && !phases.run("setup", crate::setup::run) {
        return false;
    }
    phases.run("kernel fetch", || crate::kernel_fetch(offline).map(drop))
}

pub fn run_test(args: &TestCmd) -> Result<(), String> {
    let mut phases = Phases::default();
    if prepare(&mut phases, args.no_setup, args.offline) {
        phases.run("fmt check", || {
            let mut c = cargo();
            c.args(["fmt", "--all", "--", "--check"]);
            status(c)
        });
        phases.run("clippy", || {
            let mut c = cargo();
            c.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            status(c)
        });
        phases.run("docs", || {
            let mut c = cargo();
            c.args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings");
            status(c)
        });
        phases.run("tests", || {
            let mut c = cargo();
            c.args(["test", "--workspace", "--no-fail-fast"]);
            status(c)
        });
    }
    phases.summary()
}

pub fn run_demo(args: &DemoCmd) -> Result<(), String> {
    let mut phases = Phases::default();
    if prepare(&mut phases, args.no_setup, args.offline) {
        println!(
            "\ndemo: the machine is set up and the kernel is cached. Booting test VMs arrives with \
             the walking skeleton (QEMU backend, guest init, scenarios); until then the demo stops here."
        );
    }
    phases.summary()
}
