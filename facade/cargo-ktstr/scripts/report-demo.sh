#!/bin/sh
# The run behind docs/src/cargo-ktstr-report.png: a scratch package outside this
# workspace (ktstr as a path dev-dependency, as a scheduler author's) with
# one failing and two passing tests, each a two-step scenario, run with
# `cargo ktstr test`; then headless Chromium renders its report.html.
# Run from the workspace root with cargo-ktstr on PATH
# (`cargo install --path facade/cargo-ktstr`). Chromium is not a set-up
# dependency: without it the script stops after the run and says so.
# Three VMs (about a minute each on a quiet 2-core host, more while other
# VMs hold the host slots). DIR (default: a new temporary directory) keeps
# the package and its target directory between runs.
set -eu
root=$(pwd)
[ -f "$root/facade/Cargo.toml" ] || { echo "run from the ktstr workspace root"; exit 2; }
dir=${DIR:-$(mktemp -d)}
mkdir -p "$dir/src" "$dir/tests"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "sched"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

[dev-dependencies]
ktstr = { path = "$root/facade" }
TOML
: > "$dir/src/lib.rs"
cp "$root/Cargo.lock" "$dir/Cargo.lock"
cat > "$dir/tests/sched.rs" <<'RS'
use ktstr::prelude::*;
use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};

#[ktstr_test(duration_s = 4)]
fn steady_then_more(ctx: &Ctx) -> Result<AssertResult> {
    execute_steps(ctx, vec![
        Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_0").workers(2))], HoldSpec::frac(0.5)),
        Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_1").workers(2))], HoldSpec::frac(0.5)),
    ])
}

#[ktstr_test(duration_s = 4)]
fn two_groups(ctx: &Ctx) -> Result<AssertResult> {
    execute_steps(ctx, vec![
        Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_a").workers(1))], HoldSpec::frac(0.4)),
        Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_b").workers(3))], HoldSpec::frac(0.6)),
    ])
}

#[ktstr_test(duration_s = 4)]
fn fails_on_purpose(ctx: &Ctx) -> Result<AssertResult> {
    let v = execute_steps(ctx, vec![
        Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_0").workers(3))], HoldSpec::frac(0.5)),
        Step::new(vec![Op::stop("cg_0")], HoldSpec::frac(0.5)),
    ])?;
    Ok(v.merged(AssertResult::fail("demo", "this test always fails, for the report")))
}
RS
cd "$dir"
# One test fails on purpose: cargo ktstr test exits 1.
cargo ktstr test > run.log 2>&1 || true
report=$(grep -o '^reports: [^,]*report.html' run.log | sed 's/^reports: //' | tail -1)
[ -n "$report" ] || { cat run.log; echo "no report written"; exit 1; }
echo "report: $report"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no Chromium on PATH: the screenshot is not taken"; exit 1; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1750,2750 --screenshot="$root/docs/src/cargo-ktstr-report.png" \
    "file://$report" 2>/dev/null
echo "screenshot: $root/docs/src/cargo-ktstr-report.png"
