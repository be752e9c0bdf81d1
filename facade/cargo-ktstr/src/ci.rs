//! `cargo ktstr ci github|gitlab`: a CI workflow a scheduler repository
//! adopts in one command: one job builds the tests and packs them with
//! `cargo ktstr archive`; a matrix of kernels × shards runs `cargo ktstr run
//! --archive` on machines with QEMU and no Rust toolchain; a merge job joins
//! the shards with `cargo ktstr merge` and publishes the report and the
//! JUnit XML. Kernels are cached under ktstr's cache key (the kernel specs),
//! snapshots per kernel and shard.

use std::fmt::Write as _;

use crate::error::CmdError;
use crate::{CiCmd, Done};

/// What the workflow is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct CiSpec {
    /// Kernel specs (`7.3`, `6.18`), one matrix row each.
    pub kernels: Vec<String>,
    /// Shards per kernel.
    pub machines: usize,
    /// Each shard's budget (`20m`), when the gauntlet is fitted to it.
    pub budget: Option<String>,
    /// Whether the gauntlet's variants run.
    pub gauntlet: bool,
    /// How the build job installs cargo-ktstr.
    pub install: String,
}

impl CiSpec {
    fn archive_args(&self) -> String {
        let mut a = String::from("cargo ktstr archive -o run.tar.zst");
        for k in &self.kernels {
            let _ = write!(a, " --kernel {k}");
        }
        if self.gauntlet {
            a.push_str(" --gauntlet");
        }
        let _ = write!(a, " --machines {}", self.machines);
        if let Some(b) = &self.budget {
            let _ = write!(a, " --budget {b}");
        }
        a
    }

    fn shard_list(&self) -> String {
        (1..=self.machines)
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn kernel_list(&self) -> String {
        self.kernels
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The GitHub Actions workflow.
pub fn github(s: &CiSpec) -> String {
    let n = s.machines;
    format!(
        r#"# Written by `cargo ktstr ci github` (cargo-ktstr {version}).
# Build and pack the tests once, run {n} shard(s) per kernel on machines with
# QEMU and no Rust toolchain, merge the shards into one report.
name: ktstr

on:
  push:
  pull_request:

jobs:
  archive:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install cargo-nextest and cargo-ktstr
        run: |
          cargo install --locked cargo-nextest
          {install}
      - name: Cache kernels
        uses: actions/cache@v4
        with:
          path: ~/.cache/ktstr/kernels
          key: ktstr-kernels-{kernel_key}
      - name: Pack the tests, kernels and a split into {n} shards
        run: {archive}
      - name: Keep the archive and the runner binary
        run: |
          mkdir -p pack
          mv run.tar.zst pack/
          cp "$(command -v cargo-ktstr)" pack/
      - uses: actions/upload-artifact@v4
        with:
          name: ktstr-archive
          path: pack/

  shard:
    needs: archive
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix:
        kernel: [{kernels}]
        shard: [{shards}]
    steps:
      - name: Install QEMU
        run: sudo apt-get update && sudo apt-get install -y qemu-system-x86
      - uses: actions/download-artifact@v4
        with:
          name: ktstr-archive
          path: pack
      - name: Cache snapshots
        uses: actions/cache@v4
        with:
          path: ktstr-cache
          key: ktstr-snapshots-${{{{ matrix.kernel }}}}-${{{{ matrix.shard }}}}-${{{{ github.sha }}}}
          restore-keys: ktstr-snapshots-${{{{ matrix.kernel }}}}-${{{{ matrix.shard }}}}-
      - name: Run shard ${{{{ matrix.shard }}}}/{n} on kernel ${{{{ matrix.kernel }}}}
        run: |
          chmod +x pack/cargo-ktstr
          pack/cargo-ktstr ktstr run --archive pack/run.tar.zst --kernel ${{{{ matrix.kernel }}}} --shard ${{{{ matrix.shard }}}}/{n} --dir shard --cache-dir ktstr-cache
      - if: always()
        uses: actions/upload-artifact@v4
        with:
          name: ktstr-shard-${{{{ matrix.kernel }}}}-${{{{ matrix.shard }}}}
          path: shard/results/

  merge:
    needs: [archive, shard]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: ktstr-archive
          path: pack
      - uses: actions/download-artifact@v4
        with:
          pattern: ktstr-shard-*
          path: shards
      - name: Merge the shards
        run: |
          chmod +x pack/cargo-ktstr
          pack/cargo-ktstr ktstr merge shards/* -o merged --run merged
      - name: JUnit summary
        if: always()
        run: |
          echo "**ktstr**: $(grep -c '<testcase ' merged/reports/merged/junit.xml) test runs, $(grep -c '<failure' merged/reports/merged/junit.xml) failed" >> "$GITHUB_STEP_SUMMARY"
      - if: always()
        uses: actions/upload-artifact@v4
        with:
          name: ktstr-report
          path: merged/
"#,
        version = crate::shard::KTSTR_VERSION,
        install = s.install,
        kernel_key = s.kernels.join("-"),
        archive = s.archive_args(),
        kernels = s.kernel_list(),
        shards = s.shard_list(),
    )
}

/// The GitLab CI pipeline.
pub fn gitlab(s: &CiSpec) -> String {
    let n = s.machines;
    format!(
        r#"# Written by `cargo ktstr ci gitlab` (cargo-ktstr {version}).
# Build and pack the tests once, run {n} shard(s) per kernel on machines with
# QEMU and no Rust toolchain, merge the shards into one report.
stages:
  - archive
  - shard
  - merge

ktstr-archive:
  stage: archive
  image: rust:latest
  cache:
    key: ktstr-kernels-{kernel_key}
    paths:
      - .ktstr-cache/kernels
  variables:
    KTSTR_CACHE_DIR: $CI_PROJECT_DIR/.ktstr-cache
  script:
    - cargo install --locked cargo-nextest
    - {install}
    - {archive}
    - mkdir -p pack && mv run.tar.zst pack/ && cp "$(command -v cargo-ktstr)" pack/
  artifacts:
    paths:
      - pack/

ktstr-shard:
  stage: shard
  image: debian:bookworm
  needs: [ktstr-archive]
  parallel:
    matrix:
      - KERNEL: [{kernels}]
        SHARD: [{shards}]
  cache:
    key: ktstr-snapshots-$KERNEL-$SHARD
    paths:
      - ktstr-cache
  script:
    - apt-get update && apt-get install -y qemu-system-x86
    - pack/cargo-ktstr ktstr run --archive pack/run.tar.zst --kernel $KERNEL --shard $SHARD/{n} --dir shard-$KERNEL-$SHARD --cache-dir ktstr-cache
  artifacts:
    when: always
    paths:
      - shard-$KERNEL-$SHARD/results/

ktstr-merge:
  stage: merge
  image: debian:bookworm
  needs: [ktstr-archive, ktstr-shard]
  when: always
  script:
    - pack/cargo-ktstr ktstr merge shard-* -o merged --run merged
  artifacts:
    when: always
    paths:
      - merged/
    reports:
      junit: merged/reports/merged/junit.xml
"#,
        version = crate::shard::KTSTR_VERSION,
        install = s.install,
        kernel_key = s.kernels.join("-"),
        archive = s.archive_args(),
        kernels = s.kernel_list(),
        shards = s.shard_list(),
    )
}

/// `cargo ktstr ci`.
pub fn run(c: &CiCmd) -> Result<Done, CmdError> {
    if c.machines == 0 {
        return Err(CmdError::ZeroMachines {
            what: "shards per kernel",
        });
    }
    if let Some(b) = &c.budget {
        crate::select::parse_duration(b)?;
    }
    let kernels = if c.kernel.is_empty() {
        vec!["7.3".to_string()]
    } else {
        c.kernel.clone()
    };
    for k in &kernels {
        k.parse::<ktstr_kernel::KernelSpec>()
            .map_err(|why| CmdError::BadKernelSpec {
                given: k.clone(),
                why,
            })?;
    }
    let spec = CiSpec {
        kernels,
        machines: c.machines,
        budget: c.budget.clone(),
        gauntlet: c.gauntlet,
        install: c.install.clone().unwrap_or_else(|| {
            format!(
                "cargo install --locked cargo-ktstr --version {}",
                crate::shard::KTSTR_VERSION
            )
        }),
    };
    let (text, default) = match c.system.as_str() {
        "github" => (github(&spec), ".github/workflows/ktstr.yml"),
        "gitlab" => (gitlab(&spec), ".gitlab-ci.yml"),
        other => {
            return Err(CmdError::UnknownCiSystem {
                system: other.to_string(),
            });
        }
    };
    let out = c.out.clone().unwrap_or_else(|| default.into());
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| CmdError::io(d, e))?;
    }
    if out.exists() && !c.force {
        return Err(CmdError::Exists { path: out });
    }
    std::fs::write(&out, text).map_err(|e| CmdError::io(&out, e))?;
    println!("{}", out.display());
    Ok(Done::Ok)
}

#[cfg(test)]
#[path = "ci_tests.rs"]
mod tests;
