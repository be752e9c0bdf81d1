//! Kernels built from source, for real: Debian's linux-source-7.3 with
//! ktstr's fragment, a fragment option that cannot be set, and two commits of
//! a git repository as two kernels. They download and build kernels
//! (minutes to an hour on two cores), so they are `--full` tests; the
//! pieces (spec parsing, config check, cache keys, progress) have fast unit
//! tests in the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_kernel::build::{self, BuildOptions};
use ktstr_kernel::{FetchOptions, KernelCache, KernelError, KernelSource, KernelSpec};

/// The cache the project's commands use (`KTSTR_CACHE_DIR`, else
/// `~/.cache/ktstr`): a kernel built here is there for the next run.
fn cache_root() -> PathBuf {
    std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ktstr")))
        .expect("KTSTR_CACHE_DIR or HOME is set")
}

fn options() -> BuildOptions {
    BuildOptions::new(FetchOptions {
        cache: KernelCache::new(cache_root().join("kernels")),
        offline: false,
        suites: None,
        source: None,
    })
}

fn spec(s: &str) -> KernelSpec {
    s.parse().expect("spec parses")
}

fn say(l: &str) {
    eprintln!("build: {l}");
}

#[test]
#[ignore = "full: builds linux-source-7.3 with ktstr's fragment (a cold build is tens of minutes on 2 cores; cached afterwards); run with cargo xtask test --full"]
fn source_7_3_builds_with_the_fragment_and_is_cached() {
    let opts = options();
    let first = build::build(&spec("source:7.3"), &opts, &mut say).expect("source:7.3 builds");
    let k = &first.kernel;
    assert!(k.metadata.pvh_entry, "PVH entry note");
    assert!(
        k.metadata.btf_bytes > 1 << 20,
        "BTF: {}",
        k.metadata.btf_bytes
    );
    let config = std::fs::read_to_string(k.config()).expect("config");
    for line in [
        "CONFIG_SCHED_CLASS_EXT=y",
        "CONFIG_DEBUG_INFO_BTF=y",
        "CONFIG_PVH=y",
    ] {
        assert!(config.lines().any(|l| l == line), "{line}");
    }
    assert!(
        matches!(&k.metadata.kernel_source(), KernelSource::Built { spec, tree, .. }
            if spec == "source:7.3" && tree.starts_with("debian linux-source-7.3 ")),
        "{:?}",
        k.metadata.kernel_source()
    );
    // Same source, same config: the cache has it, make does not run.
    let again = build::build(&spec("source:7.3"), &opts, &mut say).expect("again");
    assert!(!again.built_now);
    assert_eq!(again.kernel.dir, k.dir);
    // What test binaries do: look it up, never build.
    let found = ktstr_kernel::resolve(Some(&spec("source:7.3")), &opts.fetch.cache)
        .expect("resolved from the cache of built kernels");
    assert_eq!(found.vmlinux, k.vmlinux());
}

#[test]
#[ignore = "full: downloads linux-source-7.3 (167 MB) once and configures it (~1 min on 2 cores); run with cargo xtask test --full"]
fn an_option_that_cannot_be_set_fails_before_the_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fragment = dir.path().join("user.kconfig");
    // An arm64 option, and sched_ext's dependency switched off.
    std::fs::write(
        &fragment,
        "CONFIG_ARM64_SVE=y\n# CONFIG_BPF_SYSCALL is not set\n",
    )
    .expect("write");
    let mut opts = options();
    opts.user_fragment = Some(fragment);
    let mut lines = Vec::new();
    let err = build::build(&spec("source:7.3"), &opts, &mut |l| {
        lines.push(l.to_string())
    })
    .expect_err("the check refuses");
    let text = err.to_string();
    assert!(matches!(err, KernelError::ConfigCheck { .. }), "{text}");
    assert!(
        text.contains("CONFIG_ARM64_SVE=y (") && text.contains("another architecture"),
        "{text}"
    );
    assert!(
        text.contains("CONFIG_SCHED_CLASS_EXT=y (ktstr.kconfig:") && text.contains("BPF_SYSCALL=n"),
        "{text}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("building ")),
        "make did not run: {lines:?}"
    );
}

/// A git repository of linux-source-7.3 with two commits (the second sets
/// sched_ext's `slice_bypass_us` default to 4321), made once in the cache.
fn two_commit_repo(tree: &Path) -> (PathBuf, String, String) {
    let repo = cache_root().join("kernel-src/ktstr-test-repo");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=ktstr", "-c", "user.email=ktstr@localhost"])
            // No background repack of the tree's 96k objects.
            .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    };
    if !repo.join(".git").exists() {
        let tmp = repo.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let st = Command::new("cp")
            .arg("-a")
            .arg(tree)
            .arg(&tmp)
            .status()
            .expect("cp");
        assert!(st.success());
        std::fs::rename(&tmp, &repo).expect("rename");
        git(&["init", "-q", "-b", "main"]);
        // Debian's tarball ignores its own top level (`/*` in .gitignore).
        git(&["add", "-f", "."]);
        git(&["commit", "-q", "-m", "linux-source-7.3"]);
        let ext = repo.join("kernel/sched/ext/ext.c");
        let text = std::fs::read_to_string(&ext).expect("ext.c");
        let changed = text.replace(
            "static unsigned int scx_slice_bypass_us = SCX_SLICE_BYPASS / NSEC_PER_USEC;",
            "static unsigned int scx_slice_bypass_us = 4321;",
        );
        assert_ne!(changed, text, "the line to change is there");
        std::fs::write(&ext, changed).expect("write");
        git(&["commit", "-q", "-am", "sched_ext: slice_bypass_us 4321"]);
    }
    let b = git(&["rev-parse", "HEAD"]);
    let a = git(&["rev-parse", "HEAD~1"]);
    (repo, a, b)
}

#[test]
#[ignore = "full: clones a kernel repository and builds two commits (one cold build, one incremental); run with cargo xtask test --full"]
fn two_commits_of_a_git_url_are_two_kernels() {
    let opts = options();
    let src = build::build(&spec("source:7.3"), &opts, &mut say).expect("source:7.3");
    let tree = src.tree.expect("the tree was looked at");
    let (repo, a, b) = two_commit_repo(&tree);
    let url = format!("git+file://{}", repo.display());
    let ka = build::build(&spec(&format!("{url}#sha={a}")), &opts, &mut say).expect("A builds");
    let kb = build::build(&spec(&format!("{url}#sha={b}")), &opts, &mut say).expect("B builds");
    assert_ne!(ka.kernel.dir, kb.kernel.dir);
    assert_ne!(ka.kernel.metadata.release, kb.kernel.metadata.release);
    assert_ne!(
        ka.kernel.metadata.vmlinux_sha256,
        kb.kernel.metadata.vmlinux_sha256
    );
    for (k, sha) in [(&ka, &a), (&kb, &b)] {
        assert!(
            matches!(&k.kernel.metadata.kernel_source(), KernelSource::Built { tree, .. }
                if *tree == format!("git {sha}")),
            "{:?}",
            k.kernel.metadata.kernel_source()
        );
    }
}
