//! `cargo xtask bench kernel-build`: the time of a kernel build from source
//! with ktstr's fragment (the cold build when the tree was never built, or
//! with `--cold`), and the median time of the rebuild after a one-line
//! change in sched_ext's core (`kernel/sched/ext/ext.c`, or
//! `kernel/sched/ext.c` before 7.3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;
use ktstr_kernel::KernelSpec;
use ktstr_kernel::build::{self, BuildOptions};

use crate::error::FileError;

/// What the kernel-build benchmark failed with.
#[derive(Debug, thiserror::Error)]
pub enum KernelBuildBenchError {
    /// `--spec` is no kernel spec.
    #[error("--spec {spec}")]
    Spec {
        /// The spec as given.
        spec: String,
        #[source]
        source: ktstr_kernel::SpecError,
    },
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    #[error(transparent)]
    File(#[from] FileError),
    /// A build failed.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    /// The build gave no tree to rebuild.
    #[error("the build of {spec} did not say where its tree is")]
    NoTree {
        /// The spec built.
        spec: KernelSpec,
    },
    /// The tree has no sched_ext core to touch.
    #[error("{}: no kernel/sched/ext.c (no sched_ext?)", tree.display())]
    NoExtC {
        /// The kernel tree.
        tree: PathBuf,
    },
}

/// Kernel build from source: cold build and one-line rebuild times (median).
#[derive(FromArgs)]
#[argh(subcommand, name = "kernel-build")]
pub(crate) struct KernelBuildBench {
    /// the source to build (default source:7.3)
    #[argh(option, default = "String::from(\"source:7.3\")")]
    spec: String,
    /// rebuilds after a one-line change (default 3)
    #[argh(option, default = "3")]
    runs: usize,
    /// remove the tree's build directory first, to time a cold build
    #[argh(switch)]
    cold: bool,
}

/// The file a rebuild touches, in `tree`.
fn ext_c(tree: &Path) -> Result<PathBuf, KernelBuildBenchError> {
    ["kernel/sched/ext/ext.c", "kernel/sched/ext.c"]
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| KernelBuildBenchError::NoExtC {
            tree: tree.to_path_buf(),
        })
}

fn mins(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

pub(crate) fn run(b: &KernelBuildBench) -> Result<(), KernelBuildBenchError> {
    let spec: KernelSpec = b
        .spec
        .parse()
        .map_err(|source| KernelBuildBenchError::Spec {
            spec: b.spec.clone(),
            source,
        })?;
    let env = crate::host()?.kernel_cmd_env();
    let opts = BuildOptions::new(ktstr_kernel::FetchOptions {
        cache: env.cache.clone(),
        offline: false,
        suites: env.suites.clone(),
        source: None,
    });
    let mut say = |l: &str| println!("bench kernel-build: {l}");
    if b.cold {
        // Only the tree's build directory goes (the cache's entries stay).
        let first = build::build(&spec, &BuildOptions { ..opts.clone() }, &mut |_| {});
        if let Ok(Some(tree)) = first.as_ref().map(|k| k.tree.clone()) {
            let dir = build::build_dir(&env.cache, &tree);
            say(&format!("--cold: removing {}", dir.display()));
            std::fs::remove_dir_all(&dir).map_err(FileError::at("removing", &dir))?;
        }
    }
    let first = build::build(&spec, &opts, &mut say)?;
    let tree = first
        .tree
        .clone()
        .ok_or_else(|| KernelBuildBenchError::NoTree { spec: spec.clone() })?;
    match first.make_time {
        Some(t) => say(&format!("{spec}: build {} (make ran)", mins(t))),
        None => say(&format!(
            "{spec}: cached; run with --cold to time a cold build"
        )),
    }
    let m = &first.kernel.metadata;
    say(&format!(
        "{}: bzImage {} KiB, vmlinux {} MiB (DWARF stripped; BTF {} KiB)",
        m.release,
        m.bzimage_bytes >> 10,
        m.vmlinux_bytes >> 20,
        m.btf_bytes >> 10
    ));
    // The rebuilds build the tree as a path: its identity follows its files.
    let file = ext_c(&tree)?;
    let original = std::fs::read_to_string(&file).map_err(FileError::at("reading", &file))?;
    let tree_spec = KernelSpec::Path(tree.clone());
    let mut times = Vec::new();
    let mut result: Result<(), KernelBuildBenchError> = Ok(());
    for i in 0..b.runs {
        let edited = format!("{original}/* ktstr bench kernel-build {i} */\n");
        if let Err(e) = std::fs::write(&file, edited) {
            result = Err(FileError::at("writing", &file)(e).into());
            break;
        }
        match build::build(&tree_spec, &opts, &mut say) {
            Ok(k) => {
                let t = k.make_time.unwrap_or_default();
                say(&format!(
                    "rebuild {} after one line in {}: {} ({})",
                    i + 1,
                    file.display(),
                    mins(t),
                    k.kernel.metadata.release
                ));
                times.push(t);
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    // The tree is the cache's: it gets its content back.
    std::fs::write(&file, &original).map_err(FileError::at("restoring", &file))?;
    result?;
    times.sort();
    if let Some(med) = times.get(times.len() / 2) {
        println!(
            "bench kernel-build: {spec}: one-line rebuild median {} over {} runs (goal < 3m)",
            mins(*med),
            times.len()
        );
    }
    Ok(())
}
