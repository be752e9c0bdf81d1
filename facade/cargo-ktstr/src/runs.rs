//! The subcommands that run tests: `test`, `gauntlet`, `stats compare`
//! (and `stats list`, which reads what they stored).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cargo::{self, RunEnv, Targets};
use crate::compare;
use crate::error::CmdError;
use crate::placement;
use crate::select::{self, Choice, CostSource, Variant};
use crate::store::{History, Store};
use crate::{CompareCmd, Done, GauntletCmd, ListCmd, ReportCmd, TestCmd};
use ktstr_record::RunRecord;

/// A fresh run id: `YYYYMMDD-HHMMSS-<pid>` plus `suffix`.
pub(crate) fn new_run_id(suffix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{}{suffix}",
        ktstr::results::run_id_at(now, std::process::id())
    )
}

/// Settings shared by the running subcommands.
pub(crate) struct Knobs<'a> {
    pub(crate) allow_inconclusive: bool,
    pub(crate) no_restore: bool,
    pub(crate) backend: Option<&'a str>,
    pub(crate) verbose: bool,
    pub(crate) host_cpus: Option<u32>,
    pub(crate) monitor_hz: Option<u32>,
    /// Print the scheduler's state dump after passing tests too.
    pub(crate) dump: bool,
    /// Record every test's VM; failing tests keep their recordings.
    pub(crate) record: bool,
}

impl Knobs<'_> {
    pub(crate) fn env(
        &self,
        store: &Path,
        run: &str,
        kernel: Option<&Path>,
    ) -> Result<RunEnv, CmdError> {
        let mut e = RunEnv::default();
        e.set("KTSTR_RUN", run);
        e.set("KTSTR_RESULTS_DIR", store);
        if let Some(k) = kernel {
            if !k.exists() {
                return Err(CmdError::NoKernelPath {
                    path: k.to_path_buf(),
                });
            }
            e.set("KTSTR_KERNEL", k);
        }
        if self.allow_inconclusive {
            e.set("KTSTR_ALLOW_INCONCLUSIVE", "1");
        }
        if self.no_restore {
            e.set("KTSTR_RESTORE", "0");
        }
        if self.dump {
            e.set("KTSTR_DUMP", "1");
        }
        if self.record {
            e.set("KTSTR_RECORD", "1");
        }
        if let Some(b) = self.backend {
            if !matches!(b, "kvm" | "qemu" | "auto") {
                return Err(CmdError::BadBackend {
                    backend: b.to_string(),
                });
            }
            e.set("KTSTR_BACKEND", b);
        }
        if self.verbose {
            e.set("KTSTR_VERBOSE", "1");
        }
        if let Some(n) = self.host_cpus {
            e.set("KTSTR_HOST_CPUS", n.to_string());
        }
        if let Some(n) = self.monitor_hz {
            e.set("KTSTR_MONITOR_HZ", n.to_string());
        }
        Ok(e)
    }
}

pub(crate) fn store_dir(explicit: Option<&Path>) -> Result<PathBuf, CmdError> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(cargo::target_dir()?.join("ktstr")),
    }
}

/// A kernel of a run, resolved once by the command: the tests receive its path.
#[derive(Debug, Clone)]
pub(crate) struct RunKernel {
    /// What tables and run ids call it (`7.3.4`).
    pub(crate) label: String,
    /// What `KTSTR_KERNEL` is set to: the path given, or the cache entry.
    pub(crate) path: PathBuf,
}

/// The kernels of a run: each given spec's (versions fetched when not
/// cached, each resolution printed), or the default once (`None`).
pub(crate) fn kernels(
    given: &[ktstr_kernel::KernelSpec],
    all_releases: bool,
    kconfig: Option<&Path>,
) -> Result<Vec<Option<RunKernel>>, CmdError> {
    if given.is_empty() {
        return Ok(vec![None]);
    }
    let host = ktstr::config::HostConfig::from_env()?;
    let resolved = ktstr_kernel::cli::resolve_kernels(
        given,
        all_releases,
        false,
        "cargo ktstr",
        &ktstr_kernel::KernelCmdEnv {
            kconfig: kconfig.map(Path::to_path_buf),
            ..host.kernel_cmd_env()
        },
    )?;
    Ok(resolved
        .into_iter()
        .map(|r| {
            let built = matches!(
                r.kernel.source,
                Some(ktstr_kernel::KernelSource::Built { .. })
            );
            let path = if given_path(&r.spec) && !built {
                PathBuf::from(&r.spec)
            } else {
                // A version: its cache entry (the tests read its release there).
                r.kernel
                    .vmlinux
                    .parent()
                    .map_or_else(|| r.kernel.vmlinux.clone(), Path::to_path_buf)
            };
            // A built kernel's release (7.3.4-ktstr-<key>) tells two builds
            // of one version apart.
            let label = match (&r.kernel.release, built) {
                (Some(rel), true) => rel.clone(),
                _ => r
                    .kernel
                    .release
                    .as_deref()
                    .and_then(ktstr_kernel::KernelVersion::of_release)
                    .map_or_else(|| path.display().to_string(), |v| v.to_string()),
            };
            Some(RunKernel { label, path })
        })
        .collect())
}

/// Whether a spec's text is a path (passed on as given).
fn given_path(spec: &str) -> bool {
    matches!(
        spec.parse::<ktstr_kernel::KernelSpec>(),
        Ok(ktstr_kernel::KernelSpec::Path(_))
    )
}

fn summary(store: &Store, run: &str) {
    println!(
        "\nrun {run} (records in {}):",
        store.dir.join("runs").join(run).display()
    );
    print!("{}", crate::store::list_run(store, run));
    match write_reports(store, run) {
        Ok(dir) => println!(
            "reports: {0}/report.html, {0}/junit.xml, {0}/trace.json (Perfetto's UI opens it)",
            dir.display()
        ),
        Err(e) => println!("reports not written: {e}"),
    }
}

/// Writes the JUnit XML and trace JSON of `run`; returns their directory.
pub(crate) fn write_reports(store: &Store, run: &str) -> Result<PathBuf, CmdError> {
    let (records, _) = store.records(run);
    let dir = store.dir.join("reports").join(run);
    std::fs::create_dir_all(&dir).map_err(|e| CmdError::io(&dir, e))?;
    let junit = dir.join("junit.xml");
    std::fs::write(&junit, crate::report::junit(run, &records))
        .map_err(|e| CmdError::io(&junit, e))?;
    let html = dir.join("report.html");
    std::fs::write(&html, crate::html::html(run, &records)).map_err(|e| CmdError::io(&html, e))?;
    let trace = dir.join("trace.json");
    std::fs::write(&trace, crate::report::trace(&records).to_string())
        .map_err(|e| CmdError::io(&trace, e))?;
    Ok(dir)
}

/// The error of a run `run` that is not in `store`.
pub(crate) fn no_such_run(run: &str, store: &Store) -> CmdError {
    CmdError::NoSuchRun {
        run: run.to_string(),
        store: store.dir.clone(),
    }
}

pub fn report(c: &ReportCmd) -> Result<Done, CmdError> {
    let store = Store::new(store_dir(c.store.as_deref())?);
    let run = match &c.run {
        Some(r) if store.has_run(r) => r.clone(),
        Some(r) => return Err(no_such_run(r, &store)),
        None => store.runs().pop().ok_or_else(|| CmdError::EmptyStore {
            store: store.dir.clone(),
        })?,
    };
    let dir = write_reports(&store, &run)?;
    println!(
        "{0}/report.html\n{0}/junit.xml\n{0}/trace.json",
        dir.display()
    );
    Ok(Done::Ok)
}

pub fn test(c: &TestCmd) -> Result<Done, CmdError> {
    let targets = Targets {
        packages: c.package.clone(),
        tests: c.test.clone(),
        workspace: c.workspace,
        release: false,
    };
    let knobs = Knobs {
        allow_inconclusive: c.allow_inconclusive,
        no_restore: c.no_restore,
        backend: c.backend.as_deref(),
        verbose: c.verbose,
        host_cpus: c.host_cpus,
        monitor_hz: c.monitor_hz,
        dump: c.dump,
        record: c.record,
    };
    let budget = c
        .budget
        .as_deref()
        .map(select::parse_duration)
        .transpose()?;
    if let Some(p) = &c.topology
        && ktstr_topology::preset(p).is_none()
    {
        return Err(CmdError::NotAPreset {
            flag: "topology",
            preset: p.clone(),
        });
    }
    let store = Store::new(store_dir(None)?);
    let nextest = !c.no_nextest && cargo::has_nextest();
    let mut failed = Vec::new();
    let kernels = kernels(&c.kernel, c.all_releases, c.kconfig.as_deref())?;
    let many = kernels.len() > 1;
    for (i, rk) in kernels.iter().enumerate() {
        let kernel = rk.as_ref().map(|k| k.path.as_path());
        let run = new_run_id(&if many {
            format!("-k{i}")
        } else {
            String::new()
        });
        let env = knobs.env(&store.dir, &run, kernel)?;
        if let Some(k) = rk {
            println!("== kernel {} ({})", k.label, k.path.display());
        }
        let ok = match &c.topology {
            Some(p) => {
                cargo::build(&targets)?;
                let vs: Vec<Variant> = select::variants_in_listing(&cargo::list(&targets)?)
                    .into_iter()
                    .filter(|v| v.preset.name == p.as_str())
                    .filter(|v| c.filters.is_empty() || c.filters.iter().any(|f| v.matches(f)))
                    .collect();
                if vs.is_empty() {
                    return Err(CmdError::NoVariantOnPreset { preset: p.clone() });
                }
                let names: Vec<String> = vs.iter().map(|v| v.libtest.clone()).collect();
                cargo::run_exact(&targets, &names, nextest, &env)?
            }
            None => cargo::run_tests(&targets, &c.filters, nextest, &env)?,
        };
        summary(&store, &run);
        if !ok {
            failed.push(run.clone());
        }
        if let Some(b) = budget {
            let g = GauntletPlan {
                targets: &targets,
                filters: &c.filters,
                presets: &[],
                budget: Some(b),
                nextest,
            };
            if !g.run(&store, &new_run_id(&format!("-g{i}")), &knobs, kernel)? {
                failed.push(format!("gauntlet after {run}"));
            }
        }
    }
    Ok(if failed.is_empty() {
        Done::Ok
    } else {
        Done::Failed(format!("tests failed in run(s) {}", failed.join(", ")))
    })
}

struct GauntletPlan<'a> {
    targets: &'a Targets,
    filters: &'a [String],
    presets: &'a [String],
    budget: Option<Duration>,
    nextest: bool,
}

impl GauntletPlan<'_> {
    /// The variants the filters and presets select, with their expected
    /// seconds and where those come from.
    fn variants(&self, store: &Store) -> Result<Vec<(Variant, f64, CostSource)>, CmdError> {
        for p in self.presets {
            if ktstr_topology::preset(p).is_none() {
                return Err(CmdError::NotAPreset {
                    flag: "preset",
                    preset: p.clone(),
                });
            }
        }
        cargo::build(self.targets)?;
        let history = History::of(&store.all_records());
        Ok(select::variants_in_listing(&cargo::list(self.targets)?)
            .into_iter()
            .filter(|v| self.presets.is_empty() || self.presets.iter().any(|p| p == v.preset.name))
            .filter(|v| self.filters.is_empty() || self.filters.iter().any(|f| v.matches(f)))
            .map(|v| {
                let recorded = history
                    .variant_seconds
                    .get(&v.name())
                    .map_or(&[][..], Vec::as_slice);
                let duration = history.duration_s.get(&v.test).copied().unwrap_or(5);
                let (cost, src) = select::expected_seconds(recorded, v.preset, duration);
                (v, cost, src)
            })
            .collect())
    }

    /// Picks, prints the plan, runs; false when a variant failed.
    fn run(
        &self,
        store: &Store,
        run: &str,
        knobs: &Knobs<'_>,
        kernel: Option<&Path>,
    ) -> Result<bool, CmdError> {
        let listed = self.variants(store)?;
        if listed.is_empty() {
            println!("gauntlet: no variant matches");
            return Ok(true);
        }
        let vs: Vec<Variant> = listed.iter().map(|(v, _, _)| v.clone()).collect();
        let costs: Vec<f64> = listed.iter().map(|(_, c, _)| *c).collect();
        let sel = select::select(&vs, &costs, self.budget);
        print_plan(&listed, &sel, self.budget);
        let names: Vec<String> = sel.order.iter().map(|&i| vs[i].libtest.clone()).collect();
        let env = knobs.env(&store.dir, run, kernel)?;
        let t0 = Instant::now();
        let mut started = names.len();
        let ok = match self.budget {
            None => cargo::run_exact(self.targets, &names, self.nextest, &env)?,
            // One at a time, so the budget holds even when the host is
            // slower than expected (VMs of other processes holding its
            // slots): a variant starts only if it is expected to end in time.
            Some(b) => {
                let mut ok = true;
                for (k, &i) in sel.order.iter().enumerate() {
                    let spent = t0.elapsed().as_secs_f64();
                    if spent + costs[i] > b.as_secs_f64() {
                        let rest: Vec<String> =
                            sel.order[k..].iter().map(|&j| vs[j].name()).collect();
                        println!(
                            "gauntlet: budget spent ({spent:.0}s of {:.0}s, the host is slower \
                             than expected): not started: {}",
                            b.as_secs_f64(),
                            rest.join(", ")
                        );
                        started = k;
                        break;
                    }
                    ok &= cargo::run_exact(
                        self.targets,
                        std::slice::from_ref(&vs[i].libtest),
                        self.nextest,
                        &env,
                    )?;
                }
                ok
            }
        };
        let took = t0.elapsed();
        summary(store, run);
        let waited: f64 = store
            .records(run)
            .0
            .iter()
            .map(|r| r.phases_s.slot_wait)
            .sum();
        println!(
            "gauntlet: {} variant(s) in {:.0}s wall, {waited:.0}s of it summed over the variants \
             waiting for host slots held by other VMs (expected {:.0}s{})",
            started,
            took.as_secs_f64(),
            sel.expected,
            self.budget
                .map(|b| format!(
                    ", budget {:.0}s: {}",
                    b.as_secs_f64(),
                    if took <= b { "within" } else { "OVER" }
                ))
                .unwrap_or_default()
        );
        Ok(ok)
    }
}

pub(crate) fn print_plan(
    listed: &[(Variant, f64, CostSource)],
    sel: &select::Selection,
    budget: Option<Duration>,
) {
    let covered = sel.covered(&listed.iter().map(|(v, _, _)| v.clone()).collect::<Vec<_>>());
    match budget {
        Some(b) => println!(
            "gauntlet: {} of {} variants picked for a {:.0}s budget (expected {:.0}s), covering \
             {} (test, shape feature) pairs:",
            sel.order.len(),
            listed.len(),
            b.as_secs_f64(),
            sel.expected,
            covered.len()
        ),
        None => println!("gauntlet: all {} variants (no --budget):", listed.len()),
    }
    for (i, (v, cost, src)) in listed.iter().enumerate() {
        let from = match src {
            CostSource::History(n) => format!("median of {n} run(s)"),
            CostSource::Model => "model".into(),
        };
        let feats: Vec<&str> = v.features().iter().map(|f| f.name()).collect();
        let why = match &sel.choices[i] {
            Choice::Picked(new) if budget.is_some() => {
                let n: Vec<&str> = new.iter().map(|f| f.name()).collect();
                format!("PICK  new: {}", n.join(","))
            }
            Choice::Picked(_) => "PICK".into(),
            Choice::NothingNew => "skip  covers nothing new".into(),
            Choice::OverBudget { left } => format!("skip  over budget ({left:.0}s left)"),
        };
        println!(
            "  {:<48} {:<10} {:>5.0}s ({from:<17}) [{}]  {why}",
            v.name(),
            v.preset.topology.to_string(),
            cost,
            feats.join(",")
        );
    }
}

pub fn gauntlet(c: &GauntletCmd) -> Result<Done, CmdError> {
    let targets = Targets {
        packages: c.package.clone(),
        tests: c.test.clone(),
        workspace: false,
        release: false,
    };
    let budget = c
        .budget
        .as_deref()
        .map(select::parse_duration)
        .transpose()?;
    let store = Store::new(store_dir(None)?);
    let mut plan = GauntletPlan {
        targets: &targets,
        filters: &c.filters,
        presets: &c.preset,
        budget,
        nextest: !c.no_nextest && cargo::has_nextest(),
    };
    if let Some(n) = c.machines {
        return crate::portable::machines(&plan.variants(&store)?, budget, n);
    }
    if c.list {
        let listed = plan.variants(&store)?;
        println!(
            "{:<48} {:<42} {:<10} {:>6}  FEATURES",
            "VARIANT", "LIBTEST NAME", "TOPOLOGY", "EXPECT"
        );
        for (v, cost, _) in &listed {
            let feats: Vec<&str> = v.features().iter().map(|f| f.name()).collect();
            println!(
                "{:<48} {:<42} {:<10} {:>5.0}s  {}",
                v.name(),
                v.libtest,
                v.preset.topology.to_string(),
                cost,
                feats.join(",")
            );
        }
        println!(
            "{} variant(s); run one with `cargo ktstr gauntlet <name>` or \
             `cargo test -- --ignored --exact <libtest name>`",
            listed.len()
        );
        return Ok(Done::Ok);
    }
    let knobs = Knobs {
        allow_inconclusive: c.allow_inconclusive,
        no_restore: c.no_restore,
        backend: c.backend.as_deref(),
        verbose: c.verbose,
        host_cpus: None,
        monitor_hz: None,
        dump: false,
        record: false,
    };
    let kernels = kernels(&c.kernel, c.all_releases, c.kconfig.as_deref())?;
    let many = kernels.len() > 1;
    // The kernel is an axis of the budget: each kernel gets its share.
    if let Some(b) = budget
        && many
    {
        let share = b / u32::try_from(kernels.len()).unwrap_or(u32::MAX);
        println!(
            "gauntlet: {} kernels share the budget of {:.0}s: {:.0}s each",
            kernels.len(),
            b.as_secs_f64(),
            share.as_secs_f64()
        );
        plan.budget = Some(share);
    }
    let mut failed = Vec::new();
    for (i, rk) in kernels.iter().enumerate() {
        let kernel = rk.as_ref().map(|k| k.path.as_path());
        if let Some(k) = rk {
            println!("== kernel {} ({})", k.label, k.path.display());
        }
        let run = new_run_id(&format!(
            "-g{}",
            if many { i.to_string() } else { String::new() }
        ));
        if !plan.run(&store, &run, &knobs, kernel)? {
            failed.push(run);
        }
    }
    Ok(if failed.is_empty() {
        Done::Ok
    } else {
        Done::Failed(format!(
            "gauntlet variants failed in run(s) {}",
            failed.join(", ")
        ))
    })
}

pub fn stats_list(c: &ListCmd) -> Result<Done, CmdError> {
    let store = Store::new(store_dir(c.store.as_deref())?);
    match &c.run {
        Some(r) if !store.has_run(r) => Err(no_such_run(r, &store)),
        Some(r) => {
            print!("{}", crate::store::list_run(&store, r));
            Ok(Done::Ok)
        }
        None => {
            print!("{}", crate::store::list_runs(&store));
            Ok(Done::Ok)
        }
    }
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Side {
    /// Stored runs.
    Runs(Vec<String>),
    /// Runs with this kernel.
    Kernel(PathBuf),
    /// Runs with this scheduler binary (if given) and extra arguments.
    Scheduler(Option<String>, Vec<String>),
}

fn parse_side(text: &str, store: &Store) -> Result<Side, CmdError> {
    if let Some(ids) = text.strip_prefix("run:") {
        let ids: Vec<String> = ids.split(',').map(|s| s.trim().to_string()).collect();
        for id in &ids {
            if !store.has_run(id) {
                return Err(no_such_run(id, store));
            }
        }
        return Ok(Side::Runs(ids));
    }
    if let Some(k) = text.strip_prefix("kernel:") {
        let spec: ktstr_kernel::KernelSpec = k.parse().map_err(|why| CmdError::BadSideKernel {
            side: text.to_string(),
            why,
        })?;
        if let ktstr_kernel::KernelSpec::Path(p) = spec {
            return Ok(Side::Kernel(p));
        }
        // A version: resolved (fetched if needed) once, here.
        return match kernels(std::slice::from_ref(&spec), false, None)?.as_slice() {
            [Some(one)] => Ok(Side::Kernel(one.path.clone())),
            more => Err(CmdError::SideKernels {
                side: text.to_string(),
                count: more.len(),
            }),
        };
    }
    if let Some(s) = text.strip_prefix("scheduler:") {
        let mut words = s.split_whitespace().peekable();
        let bin = match words.peek() {
            Some(w) if !w.starts_with('-') => words.next().map(str::to_string),
            _ => None,
        };
        return Ok(Side::Scheduler(bin, words.map(str::to_string).collect()));
    }
    if store.has_run(text) {
        return Ok(Side::Runs(vec![text.to_string()]));
    }
    Err(CmdError::BadSide {
        side: text.to_string(),
    })
}

/// A scheduler binary by path, else in the target directory's profiles,
/// else in `PATH`.
fn find_binary(name: &str, target: &Path) -> Result<PathBuf, CmdError> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(CmdError::NoSuchBinary {
                name: name.to_string(),
            })
        };
    }
    let in_target = ["debug", "release"]
        .iter()
        .map(|d| target.join(d).join(name));
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    in_target
        .chain(in_path)
        .find(|c| c.is_file())
        .ok_or_else(|| CmdError::BinaryNotFound {
            name: name.to_string(),
            target: target.to_path_buf(),
        })
}

pub fn stats_compare(c: &CompareCmd) -> Result<Done, CmdError> {
    let store = Store::new(store_dir(c.store.as_deref())?);
    let a = parse_side(&c.a, &store)?;
    let b = parse_side(&c.b, &store)?;
    if !(0.0..1.0).contains(&c.alpha) || c.alpha == 0.0 {
        return Err(CmdError::BadAlpha { alpha: c.alpha });
    }
    for f in &c.figure {
        if compare::spec(f).is_none() {
            return Err(CmdError::NotAFigure {
                figure: f.clone(),
                known: compare::FIGURES.iter().map(|f| f.key).collect(),
            });
        }
    }
    let targets = Targets {
        packages: c.package.clone(),
        tests: c.test.clone(),
        workspace: false,
        release: false,
    };
    let needs_runs = |s: &Side| !matches!(s, Side::Runs(_));
    let mut runs_a = Vec::new();
    let mut runs_b = Vec::new();
    if needs_runs(&a) || needs_runs(&b) {
        let Some(test) = &c.test_name else {
            return Err(CmdError::NeedsTestName);
        };
        if c.reps == 0 {
            return Err(CmdError::ZeroReps);
        }
        cargo::build(&targets)?;
        let target = cargo::target_dir()?;
        let knobs = Knobs {
            allow_inconclusive: c.allow_inconclusive,
            no_restore: false,
            backend: None,
            verbose: false,
            host_cpus: None,
            monitor_hz: None,
            dump: false,
            record: false,
        };
        let nextest = !c.no_nextest && cargo::has_nextest();
        // Alternate A and B so a drift of the host weighs on both alike.
        for rep in 0..c.reps {
            for (side, tag, out) in [(&a, "a", &mut runs_a), (&b, "b", &mut runs_b)] {
                if let Side::Runs(ids) = side {
                    if rep == 0 {
                        out.extend(ids.iter().cloned());
                    }
                    continue;
                }
                let run = new_run_id(&format!("-{tag}{rep}"));
                let mut env = match side {
                    Side::Kernel(k) => knobs.env(&store.dir, &run, Some(k))?,
                    _ => knobs.env(&store.dir, &run, None)?,
                };
                if let Side::Scheduler(bin, args) = side {
                    if let Some(bin) = bin {
                        env.set("KTSTR_SCHEDULER", find_binary(bin, &target)?);
                    }
                    env.set("KTSTR_SCHED_ARGS", args.join(" "));
                }
                println!(
                    "== side {} run {} of {}: {run}",
                    tag.to_uppercase(),
                    rep + 1,
                    c.reps
                );
                // A failing verdict still has figures: compare them anyway.
                cargo::run_exact(&targets, std::slice::from_ref(test), nextest, &env)?;
                out.push(run);
            }
        }
    } else {
        if let Side::Runs(ids) = &a {
            runs_a.clone_from(ids);
        }
        if let Side::Runs(ids) = &b {
            runs_b.clone_from(ids);
        }
    }
    let ra = records_of(&store, &runs_a, c.test_name.as_deref())?;
    let rb = records_of(&store, &runs_b, c.test_name.as_deref())?;
    // Recomputed from the workers: older records get today's figures.
    let fa: Vec<_> = ra.iter().map(RunRecord::key_figures).collect();
    let fb: Vec<_> = rb.iter().map(RunRecord::key_figures).collect();
    let wanted: Vec<&compare::FigureSpec> = compare::FIGURES
        .iter()
        .filter(|f| c.figure.is_empty() || c.figure.iter().any(|w| w == f.key))
        .collect();
    let mut sets = Vec::new();
    for spec in wanted {
        let va: Vec<f64> = fa.iter().filter_map(|m| m.get(spec.key).copied()).collect();
        let vb: Vec<f64> = fb.iter().filter_map(|m| m.get(spec.key).copied()).collect();
        if va.len() >= 2 && vb.len() >= 2 {
            sets.push((*spec, va, vb));
        }
    }
    if sets.is_empty() {
        return Err(CmdError::TooFewValues {
            a: fa.len(),
            b: fb.len(),
        });
    }
    let rows = compare::compare(&sets, c.alpha);
    println!(
        "A = {} ({})\nB = {} ({})",
        c.a,
        runs_a.join(","),
        c.b,
        runs_b.join(",")
    );
    print!("{}", compare::table(&rows, c.alpha));
    let placement = placement::compare(&ra, &rb);
    if !placement.is_empty() {
        print!("{}", placement::table(&placement));
    }
    let regressed: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == compare::Verdict::Regression)
        .map(|r| r.spec.key)
        .collect();
    Ok(if regressed.is_empty() {
        Done::Ok
    } else {
        Done::Failed(format!(
            "regression of B against A in {}",
            regressed.join(", ")
        ))
    })
}

/// The records of `runs` for `test` (every record when no test is named).
fn records_of(
    store: &Store,
    runs: &[String],
    test: Option<&str>,
) -> Result<Vec<RunRecord>, CmdError> {
    let mut out = Vec::new();
    for run in runs {
        let (recs, _) = store.records(run);
        let mut found = false;
        for r in recs {
            let name = Some(ktstr::results::test_path(&r.test));
            let variant = r.variant.as_deref();
            let hit = match test {
                None => true,
                Some(t) => {
                    name == Some(t) && variant.is_none() || variant == Some(t) || {
                        // A variant named by its libtest name.
                        select::parse_variant(t).is_some_and(|v| Some(v.name().as_str()) == variant)
                    }
                }
            };
            if !hit {
                continue;
            }
            found = true;
            out.push(r);
        }
        if !found {
            return Err(CmdError::NoRecords {
                run: run.clone(),
                test: test.map(str::to_string),
                store: store.dir.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_and_bad_ones_say_the_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("runs/r1")).expect("mkdir");
        let store = Store::new(dir.path());
        let side = |text: &str| parse_side(text, &store).map_err(|e| e.to_string());
        assert_eq!(side("run:r1"), Ok(Side::Runs(vec!["r1".into()])));
        assert_eq!(side("r1"), Ok(Side::Runs(vec!["r1".into()])));
        assert!(side("run:r1,r2").expect_err("r2").contains("\"r2\""));
        assert_eq!(
            side("scheduler:scx-ktstr --slow --slow-us 10000"),
            Ok(Side::Scheduler(
                Some("scx-ktstr".into()),
                vec!["--slow".into(), "--slow-us".into(), "10000".into()]
            ))
        );
        assert_eq!(
            side("scheduler:--slow"),
            Ok(Side::Scheduler(None, vec!["--slow".into()]))
        );
        assert_eq!(
            side("kernel:/k/vmlinux"),
            Ok(Side::Kernel("/k/vmlinux".into()))
        );
        assert!(side("nope").expect_err("bad").contains("run:ID"));
    }

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = find_binary("no-such-sched-xyz", dir.path())
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cargo build --bin no-such-sched-xyz"), "{e}");
        std::fs::create_dir_all(dir.path().join("debug")).expect("mkdir");
        std::fs::write(dir.path().join("debug/s"), b"").expect("write");
        assert_eq!(
            find_binary("s", dir.path()).expect("found"),
            dir.path().join("debug/s")
        );
    }
}
