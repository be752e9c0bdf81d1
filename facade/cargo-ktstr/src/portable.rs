//! `cargo ktstr archive` and `cargo ktstr run --archive`: the commands
//! around the archive format of [`crate::archive`].

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::archive::{self, Contents};
use crate::cargo::{RunEnv, Targets};
use crate::error::CmdError;
use crate::runs::{Knobs, new_run_id};
use crate::select::{CostSource, Variant};
use crate::shard::{self, ArchiveManifest, PackedKernel, Plan, ShardManifest};
use crate::store::Store;
use crate::{ArchiveCmd, Done, RunArchiveCmd};

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A directory for `--workspace-remap`: nextest wants a workspace root
/// with a `Cargo.toml` and each package's directory (a test's working
/// directory); the archive's tests need no source, so a stand-in.
fn stand_in_workspace(dir: &Path, package_dirs: &[String]) -> Result<(), CmdError> {
    for p in package_dirs {
        let rel = Path::new(p);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(CmdError::PackageDirLeaves { dir: p.clone() });
        }
        let d = dir.join(rel);
        std::fs::create_dir_all(&d).map_err(|e| CmdError::io(&d, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| CmdError::io(dir, e))?;
    let toml = dir.join("Cargo.toml");
    std::fs::write(
        &toml,
        "# A stand-in workspace root: the tests run from a nextest archive.\n[workspace]\n",
    )
    .map_err(|e| CmdError::io(&toml, e))
}

/// Lists the tests of a nextest archive that a run with `args` would run.
fn list(
    nextest: &Path,
    archive_file: &Path,
    remap: &Path,
    run_ignored: bool,
    args: &[String],
) -> Result<Vec<String>, CmdError> {
    let mut c = Command::new(nextest);
    c.args(["nextest", "list", "--message-format", "json"])
        .arg("--archive-file")
        .arg(archive_file)
        .arg("--workspace-remap")
        .arg(remap)
        .args(args);
    if run_ignored {
        c.args(["--run-ignored", "all"]);
    }
    archive::matching_tests(&archive::output(c)?)
}

/// The expected seconds of each test: its recorded runs' median (total
/// less slot wait), else the gauntlet's model for a variant, else 10 s plus
/// its declared duration.
pub fn expected_costs(tests: &[String], store: &Store) -> Vec<f64> {
    let records = store.all_records();
    tests
        .iter()
        .map(|t| {
            let mut seen: Vec<f64> = Vec::new();
            let mut duration = None;
            for r in records.iter().filter(|r| shard::libtest_name(r) == *t) {
                duration = Some(r.duration_s);
                if r.phases_s.body.is_some() {
                    seen.push((r.phases_s.total - r.phases_s.slot_wait).max(0.0));
                }
            }
            if !seen.is_empty() {
                return crate::select::median(&seen);
            }
            let d = duration.unwrap_or(5);
            match crate::select::parse_variant(t) {
                Some(v) => crate::select::model_seconds(v.preset, d),
                None => 10.0 + f64::from(d),
            }
        })
        .collect()
}

/// `cargo ktstr archive`.
pub fn archive(c: &ArchiveCmd) -> Result<Done, CmdError> {
    let nextest = archive::find_nextest().ok_or(CmdError::NoNextest)?;
    let targets = Targets {
        packages: c.package.clone(),
        tests: c.test.clone(),
        workspace: c.workspace,
        release: false,
    };
    let kernels = crate::runs::kernels(&c.kernel, false, None)?;
    let host = ktstr::config::HostConfig::from_env()?;
    let tmp = tempfile::tempdir().map_err(|source| CmdError::Temp { source })?;
    let nx = tmp.path().join(NEXTEST_ARCHIVE_NAME);
    let mut a = Command::new(&nextest);
    a.args(["nextest", "archive", "--archive-file"])
        .arg(&nx)
        .args(targets_args(&targets));
    eprintln!("cargo ktstr: running {a:?}");
    let st = crate::child::status(&mut a).map_err(|source| CmdError::Spawn {
        command: "cargo-nextest".into(),
        source,
    })?;
    if !st.success() {
        return Err(CmdError::NextestArchiveFailed);
    }
    let remap = tmp.path().join("workspace");
    let package_dirs = package_dirs()?;
    stand_in_workspace(&remap, &package_dirs)?;
    let mut tests = list(&nextest, &nx, &remap, c.gauntlet, &c.filter_args())?;
    if tests.is_empty() {
        return Err(CmdError::NoTests);
    }
    let budget = c
        .budget
        .as_deref()
        .map(crate::select::parse_duration)
        .transpose()?;
    let store = Store::new(crate::runs::store_dir(None)?);
    let mut costs = expected_costs(&tests, &store);
    if let Some(b) = budget {
        let n = c.machines.ok_or(CmdError::BudgetNeedsMachines)?;
        (tests, costs) = fit(&tests, &costs, b, n);
    }
    let mut contents = Contents::default();
    contents.add(NEXTEST_ARCHIVE_NAME, &nx);
    contents.add("bin/cargo-nextest", &nextest);
    pack_declared_schedulers(&nextest, &targets, &mut contents)?;
    let mut packed = Vec::new();
    for rk in &kernels {
        let (label, path) = match rk {
            Some(k) => (k.label.clone(), k.path.clone()),
            None => {
                let k = host.resolve_kernel(None)?;
                let label = k
                    .release
                    .as_deref()
                    .and_then(ktstr_kernel::KernelVersion::of_release)
                    .map_or_else(|| "default".into(), |v| v.to_string());
                let dir = k
                    .vmlinux
                    .parent()
                    .map_or_else(|| k.vmlinux.clone(), Path::to_path_buf);
                (label, dir)
            }
        };
        let inside = format!("kernels/{label}");
        if path.is_dir() {
            contents.add_dir(&inside, &path)?;
        } else {
            let name = path
                .file_name()
                .map_or_else(|| "vmlinux".into(), |n| n.to_string_lossy().into_owned());
            contents.add(format!("{inside}/{name}"), &path);
        }
        let release = host
            .resolve_kernel(ktstr_kernel::KernelSpec::of_path(Some(&path)).as_ref())
            .ok()
            .and_then(|k| k.release);
        println!(
            "kernel {label}: {} ({})",
            path.display(),
            release.as_deref().unwrap_or("?")
        );
        packed.push(PackedKernel {
            label,
            release,
            dir: inside,
            vmlinux_sha256: None,
        });
    }
    for name in &c.installed_scheduler {
        let p = host.cache_root.join(ktstr::INSTALLED_DIR).join(name);
        if !p.is_file() {
            return Err(CmdError::NotInstalled {
                name: name.clone(),
                path: p,
            });
        }
        contents.add(format!("cache/{}/{name}", ktstr::INSTALLED_DIR), p);
    }
    let plan = match c.machines {
        Some(0) => return Err(CmdError::ZeroMachines { what: "shards" }),
        Some(n) => {
            let shards = shard::balance(&costs, n);
            let expected_s = shard::loads(&shards, &costs);
            Some(Plan {
                shards: shards
                    .iter()
                    .map(|s| s.iter().map(|&i| tests[i].clone()).collect())
                    .collect(),
                expected_s,
            })
        }
        None => None,
    };
    let files = contents.hashed()?;
    for k in &mut packed {
        let vmlinux = format!("{}/vmlinux", k.dir);
        k.vmlinux_sha256 = files
            .iter()
            .find(|f| f.path == vmlinux)
            .map(|f| f.sha256.clone());
    }
    let manifest = ArchiveManifest {
        format: shard::FORMAT,
        ktstr_version: shard::KTSTR_VERSION.into(),
        archive_id: new_run_id("-archive"),
        nextest_archive: NEXTEST_ARCHIVE_NAME.into(),
        nextest_binary: Some("bin/cargo-nextest".into()),
        run_ignored: c.gauntlet,
        package_dirs,
        // A budget kept some variants: the shards run exactly those.
        filter: if budget.is_some() {
            Some(archive::exact_filter(&tests))
        } else {
            c.filter.clone()
        },
        tests,
        kernels: packed,
        files,
        plan,
    };
    archive::write(&c.out, &manifest, &contents)?;
    let size = std::fs::metadata(&c.out).map_or(0, |m| m.len());
    println!(
        "{}: {} test(s), {} kernel(s), {:.0} MiB, archive {}",
        c.out.display(),
        manifest.tests.len(),
        manifest.kernels.len(),
        size as f64 / (1u64 << 20) as f64,
        manifest.archive_id
    );
    if let Some(p) = &manifest.plan {
        for (k, (s, e)) in p.shards.iter().zip(&p.expected_s).enumerate() {
            println!(
                "  shard {}/{}: {} test(s), expected {e:.0}s",
                k + 1,
                p.shards.len(),
                s.len()
            );
        }
    }
    Ok(Done::Ok)
}

/// The directories of the workspace's packages, relative to its root
/// (`cargo metadata`).
fn package_dirs() -> Result<Vec<String>, CmdError> {
    let out = archive::output({
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.args(["metadata", "--format-version", "1", "--no-deps"]);
        c
    })?;
    let meta: serde_json::Value =
        serde_json::from_str(&out).map_err(|source| CmdError::NoJson {
            command: "cargo metadata",
            source,
        })?;
    let root = Path::new(
        meta["workspace_root"]
            .as_str()
            .ok_or(CmdError::MissingField {
                command: "cargo metadata",
                field: "workspace_root",
            })?,
    );
    let mut dirs: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Path::new(p["manifest_path"].as_str()?)
                .parent()?
                .strip_prefix(root)
                .ok()
                .map(|d| d.display().to_string())
        })
        .filter(|d| !d.is_empty())
        .collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

/// The tests that fit `n` machines of `budget` each: every test that is not
/// a gauntlet variant, and the variants [`shard::fit_machines`] picks.
fn fit(
    tests: &[String],
    costs: &[f64],
    budget: std::time::Duration,
    n: usize,
) -> (Vec<String>, Vec<f64>) {
    let mut fixed = Vec::new();
    let mut variants = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        match crate::select::parse_variant(t) {
            Some(v) => variants.push((i, v)),
            None => fixed.push(i),
        }
    }
    let vs: Vec<_> = variants.iter().map(|(_, v)| v.clone()).collect();
    let vc: Vec<f64> = variants.iter().map(|(i, _)| costs[*i]).collect();
    let fc: Vec<f64> = fixed.iter().map(|&i| costs[i]).collect();
    let sel = shard::fit_machines(&fc, &vs, &vc, Some(budget), n);
    let mut keep: Vec<usize> = fixed;
    keep.extend(sel.order.iter().map(|&j| variants[j].0));
    keep.sort_unstable();
    println!(
        "budget {:.0}s on each of {n} machine(s): {} of {} variant(s) kept",
        budget.as_secs_f64(),
        sel.order.len(),
        variants.len()
    );
    (
        keep.iter().map(|&i| tests[i].clone()).collect(),
        keep.iter().map(|&i| costs[i]).collect(),
    )
}

/// `gauntlet --machines N`: the picked variants split into N shards.
pub(crate) fn machines(
    listed: &[(Variant, f64, CostSource)],
    budget: Option<Duration>,
    n: usize,
) -> Result<Done, CmdError> {
    if n == 0 {
        return Err(CmdError::ZeroMachines { what: "machines" });
    }
    let vs: Vec<Variant> = listed.iter().map(|(v, _, _)| v.clone()).collect();
    let costs: Vec<f64> = listed.iter().map(|(_, c, _)| *c).collect();
    let sel = shard::fit_machines(&[], &vs, &costs, budget, n);
    crate::runs::print_plan(
        listed,
        &sel,
        budget.map(|b| b * u32::try_from(n).unwrap_or(u32::MAX)),
    );
    let picked: Vec<f64> = sel.order.iter().map(|&i| costs[i]).collect();
    let shards = shard::balance(&picked, n);
    let loads = shard::loads(&shards, &picked);
    let mean = loads.iter().sum::<f64>() / n as f64;
    println!(
        "gauntlet: {} variant(s) on {n} machine(s), by expected seconds{}:",
        sel.order.len(),
        budget.map_or_else(String::new, |b| format!(
            ", each within {:.0}s",
            b.as_secs_f64()
        ))
    );
    for (k, (s, l)) in shards.iter().zip(&loads).enumerate() {
        let names: Vec<String> = s.iter().map(|&j| vs[sel.order[j]].name()).collect();
        println!(
            "  shard {}/{n}: {l:>5.0}s  {} variant(s): {}",
            k + 1,
            s.len(),
            names.join(" ")
        );
    }
    let max = loads.iter().copied().fold(0.0f64, f64::max);
    if mean > 0.0 {
        println!(
            "slowest shard {max:.0}s, mean {mean:.0}s ({:+.0}%); run them with `cargo ktstr \
             archive --gauntlet -E 'test(/::gauntlet::/)'{} --machines {n}` and `cargo ktstr run --archive F --shard K/{n}`",
            (max / mean - 1.0) * 100.0,
            budget.map_or_else(String::new, |b| format!(" --budget {}s", b.as_secs()))
        );
    }
    Ok(Done::Ok)
}

const NEXTEST_ARCHIVE_NAME: &str = "nextest-archive.tar.zst";

/// Packs what the test binaries' declared schedulers need outside nextest's archive (see
/// [`crate::declared`]); says what it packed and what it could not.
fn pack_declared_schedulers(
    nextest: &Path,
    targets: &Targets,
    contents: &mut Contents,
) -> Result<(), CmdError> {
    let mut c = Command::new(nextest);
    c.args(["nextest", "list", "--list-type", "binaries-only"])
        .args(["--message-format", "json"])
        .args(targets_args(targets));
    let bins = crate::declared::binaries(&archive::output(c)?)?;
    let mut all = Vec::new();
    for b in &bins {
        all.extend(crate::declared::list(b)?);
    }
    let (files, notes) = crate::declared::files(&all, &crate::cargo::target_dir()?);
    for (inside, host) in files {
        if contents.files.iter().any(|(i, _)| *i == inside) {
            continue;
        }
        println!("scheduler file {inside}: {}", host.display());
        contents.add(inside, host);
    }
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

fn targets_args(t: &Targets) -> Vec<String> {
    let mut a = Vec::new();
    for p in &t.packages {
        a.extend(["-p".to_string(), p.clone()]);
    }
    for x in &t.tests {
        a.extend(["--test".to_string(), x.clone()]);
    }
    if t.workspace {
        a.push("--workspace".into());
    }
    a
}

/// Writes the shard's manifest (temp then rename: a killed shard leaves the
/// one it wrote at start).
fn write_shard_manifest(store: &Path, m: &ShardManifest) -> Result<(), CmdError> {
    let file = store.join(shard::SHARD_MANIFEST);
    let tmp = store.join(".shard.json.tmp");
    let text = serde_json::to_string_pretty(m).map_err(|source| CmdError::Serialize {
        what: "the shard's manifest",
        source,
    })?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| CmdError::io(&file, e))
}

/// `cargo ktstr run --archive`.
pub fn run(c: &RunArchiveCmd) -> Result<Done, CmdError> {
    let dir = c.dir.as_deref().unwrap_or(Path::new("ktstr-shard"));
    let work = absolute(dir)?;
    let unpacked = work.join("archive");
    let store_dir = work.join("results");
    if store_dir.join(shard::SHARD_MANIFEST).exists() {
        return Err(CmdError::ShardRanHere { dir: store_dir });
    }
    let m = archive::unpack(&c.archive, &unpacked)?;
    let kernel = match (&c.kernel, m.kernels.as_slice()) {
        (None, [one]) => one.clone(),
        (Some(l), ks) => pick_kernel(ks, l)?,
        (None, ks) => return Err(CmdError::PickKernel { labels: labels(ks) }),
    };
    let nextest = match (&c.nextest, &m.nextest_binary) {
        (Some(p), _) => p.clone(),
        (None, Some(b)) => unpacked.join(b),
        (None, None) => archive::find_nextest().ok_or(CmdError::NoNextestGiven)?,
    };
    let nx = unpacked.join(&m.nextest_archive);
    let remap = work.join("workspace");
    stand_in_workspace(&remap, &m.package_dirs)?;
    let mut filter: Vec<String> = Vec::new();
    let (partition, tests) = match (&c.shard, &c.partition) {
        (Some(_), Some(_)) => return Err(CmdError::ShardAndPartition),
        (Some(s), None) => {
            let plan = m.plan.as_ref().ok_or(CmdError::NoPlan)?;
            let k = shard::parse_shard(s, plan.shards.len())?;
            let tests = plan.shards[k].clone();
            filter.extend(["-E".into(), archive::exact_filter(&tests)]);
            (format!("plan:{s}"), tests)
        }
        (None, Some(p)) => {
            shard::check_partition(p)?;
            let mut args = m.filter_args();
            args.extend(["--partition".into(), p.clone()]);
            let tests = list(&nextest, &nx, &remap, m.run_ignored, &args)?;
            filter = args;
            (p.clone(), tests)
        }
        (None, None) => (String::from("all"), m.tests.clone()),
    };
    if filter.is_empty() {
        filter = m.filter_args();
    }
    let run = new_run_id("-shard");
    std::fs::create_dir_all(&store_dir).map_err(|e| CmdError::io(&store_dir, e))?;
    let mut sm = ShardManifest {
        format: shard::FORMAT,
        ktstr_version: shard::KTSTR_VERSION.into(),
        archive_id: m.archive_id.clone(),
        archive_tests: m.tests.clone(),
        archive_kernels: m.kernels.iter().map(|k| k.label.clone()).collect(),
        kernel: kernel.label.clone(),
        partition,
        tests,
        run: run.clone(),
        started_unix: now_unix(),
        finished_unix: None,
        wall_s: None,
        passed: None,
    };
    write_shard_manifest(&store_dir, &sm)?;
    let store_abs = absolute(&store_dir)?;
    let knobs = Knobs {
        allow_inconclusive: c.allow_inconclusive,
        no_restore: false,
        backend: c.backend.as_deref(),
        verbose: c.verbose,
        host_cpus: c.host_cpus,
        monitor_hz: None,
        dump: false,
        record: false,
    };
    let kdir = absolute(&unpacked.join(&kernel.dir))?;
    let mut env: RunEnv = knobs.env(&store_abs, &run, Some(&archive::kernel_path(&kdir)))?;
    let cache = match &c.cache_dir {
        Some(d) => d.clone(),
        None => work.join("cache"),
    };
    // Installed schedulers packed in the archive go into this cache.
    let packed_cache = unpacked.join("cache");
    if packed_cache.is_dir() {
        copy_tree(&packed_cache, &cache)?;
    }
    // Declared host paths (schedulers by path, their files) are found under this root.
    let paths = unpacked.join(crate::declared::PATHS_DIR);
    if paths.is_dir() {
        env.set(ktstr::ARCHIVE_ROOT_ENV, absolute(&paths)?);
    }
    env.set("KTSTR_CACHE_DIR", absolute(&cache)?);
    let extract = work.join("nextest");
    std::fs::create_dir_all(&extract).map_err(|e| CmdError::io(&extract, e))?;
    let mut cmd = Command::new(&nextest);
    cmd.args(["nextest", "run", "--no-fail-fast", "--archive-file"])
        .arg(&nx)
        .arg("--workspace-remap")
        .arg(&remap)
        .arg("--extract-to")
        .arg(&extract)
        .arg("--extract-overwrite")
        .args(&filter);
    if m.run_ignored {
        cmd.args(["--run-ignored", "all"]);
    }
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    // Schedulers found on PATH where the archive was made come first on this one's.
    let sched_bin = unpacked.join(crate::declared::SCHED_BIN_DIR);
    if sched_bin.is_dir() {
        let dir = absolute(&sched_bin)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)))
            .map_err(|source| CmdError::JoinPaths {
                dir: sched_bin.clone(),
                source,
            })?;
        cmd.env("PATH", joined);
    }
    eprintln!("cargo ktstr: running {cmd:?}");
    let t0 = Instant::now();
    let st = crate::child::status(&mut cmd).map_err(|source| CmdError::Spawn {
        command: nextest.display().to_string(),
        source,
    })?;
    sm.finished_unix = Some(now_unix());
    sm.wall_s = Some(t0.elapsed().as_secs_f64());
    sm.passed = Some(st.success());
    write_shard_manifest(&store_dir, &sm)?;
    let store = Store::new(&store_abs);
    let (recs, bad) = store.records(&run);
    print!("{}", crate::store::list_run(&store, &run));
    let have: std::collections::BTreeSet<String> = recs.iter().map(shard::libtest_name).collect();
    let lost: Vec<&String> = sm.tests.iter().filter(|t| !have.contains(*t)).collect();
    println!(
        "shard {} on kernel {}: {} test(s), {} record(s), {:.0}s wall; results in {} (merge \
         them with `cargo ktstr merge`)",
        sm.partition,
        sm.kernel,
        sm.tests.len(),
        recs.len(),
        sm.wall_s.unwrap_or(0.0),
        store_dir.display()
    );
    if !lost.is_empty() || !bad.is_empty() {
        let names: Vec<&str> = lost.iter().map(|s| s.as_str()).collect();
        return Ok(Done::Failed(format!(
            "{} test(s) of the shard wrote no record ({}){}",
            lost.len(),
            names.join(", "),
            if bad.is_empty() {
                String::new()
            } else {
                format!(", {} record(s) unreadable", bad.len())
            }
        )));
    }
    Ok(if st.success() {
        Done::Ok
    } else {
        Done::Failed("tests of the shard failed".into())
    })
}

/// The packed kernel `spec` names: its label (`7.3.4`), or a version line
/// only it is of (`7.3`, as the CI matrix names it).
pub fn pick_kernel(ks: &[PackedKernel], spec: &str) -> Result<PackedKernel, CmdError> {
    if let Some(k) = ks.iter().find(|k| k.label == spec) {
        return Ok(k.clone());
    }
    let line: Vec<&PackedKernel> = ks
        .iter()
        .filter(|k| k.label.starts_with(&format!("{spec}.")))
        .collect();
    match line.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CmdError::KernelNotPacked {
            spec: spec.to_string(),
            labels: labels(ks),
        }),
        _ => Err(CmdError::KernelAmbiguous {
            spec: spec.to_string(),
            labels: labels(ks),
        }),
    }
}

fn labels(ks: &[PackedKernel]) -> Vec<String> {
    ks.iter().map(|k| k.label.clone()).collect()
}

/// `path` made absolute (against the working directory).
fn absolute(path: &Path) -> Result<std::path::PathBuf, CmdError> {
    std::path::absolute(path).map_err(|e| CmdError::io(path, e))
}

/// Copies the files below `from` into `to` (keeping what `to` has).
fn copy_tree(from: &Path, to: &Path) -> Result<(), CmdError> {
    std::fs::create_dir_all(to).map_err(|e| CmdError::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| CmdError::io(from, e))? {
        let e = e.map_err(|e| CmdError::io(from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| CmdError::io(&dst, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "portable_tests.rs"]
mod tests;
