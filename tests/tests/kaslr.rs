//! KASLR: a randomized boot (the bzImage, whose decompressor picks the
//! kernel's place) is located by the host monitor from vCPU registers, and
//! every read — runqueues in the image, per-CPU data in the direct map, the
//! scheduler's BPF globals in vmalloc — still works. The guest's own `_text`
//! is the oracle for the slide.

use std::sync::Mutex;

use ktstr::prelude::*;
use ktstr::test_support::Outcome;
mod common;
use common::run_test_started;

const SCX: Scheduler = Scheduler::named("scx").binary(SchedulerSpec::Discover("scx-ktstr"));

/// Where x86-64 links `_text` (`__START_KERNEL`: `__START_KERNEL_map` plus
/// `CONFIG_PHYSICAL_START`, 16 MiB in the Debian kernel).
const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;

/// The console marker the guest writes its `_text` after.
const MARK: &str = "ktstr-kaslr: _text=";

/// Writes the guest's own `_text` (from `/proc/kallsyms`, whose first lines
/// are the image's start) into the kernel log at a level the console shows.
fn report_text() -> Result<()> {
    use std::io::{BufRead, Write};
    let f = std::fs::File::open("/proc/kallsyms")?;
    let text = std::io::BufReader::new(f)
        .lines()
        .take(64)
        .map_while(std::result::Result::ok)
        .find_map(|l| l.strip_suffix(" T _text").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no _text in the first lines of /proc/kallsyms"))?;
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
    // <2>: KERN_CRIT, above the `quiet` console level.
    kmsg.write_all(format!("<2>{MARK}{text}\n").as_bytes())?;
    Ok(())
}

/// Slides seen by [`located_and_read`], in boot order.
static SLIDES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The monitor placed the randomized kernel where the guest says it is, and
/// read it: every snapshot has each CPU's runqueue, and the scheduler's
/// `nr_dispatched` (a BPF global, in vmalloc) moved.
fn located_and_read(result: &VmResult) -> Result<()> {
    placed_and_read(result, true)
}

/// The same for a `nokaslr` boot of the vmlinux: slide 0, checked.
fn fixed_and_read(result: &VmResult) -> Result<()> {
    placed_and_read(result, false)
}

fn placed_and_read(result: &VmResult, randomized: bool) -> Result<()> {
    let p = result.kernel_placement().ok_or_else(|| {
        anyhow::anyhow!(
            "the monitor never placed the kernel: {:?}",
            result.monitor.unavailable()
        )
    })?;
    anyhow::ensure!(
        p.randomized == randomized,
        "expected randomized = {randomized}: {p:?}"
    );
    let guest_text = result
        .console
        .iter()
        .find_map(|l| l.split(MARK).nth(1))
        .ok_or_else(|| anyhow::anyhow!("the guest's {MARK} line is not on the console"))?;
    let guest_text = u64::from_str_radix(guest_text.trim(), 16)?;
    anyhow::ensure!(
        guest_text == LINK_TEXT.wrapping_add(p.slide),
        "the guest says _text is {guest_text:#x}, the monitor found slide {:#x} ({:#x})",
        p.slide,
        LINK_TEXT.wrapping_add(p.slide)
    );
    let series = SampleSeries::from_drained_typed(
        result.snapshot_bridge.drain_ordered_with_stats(),
        result.monitor.clone(),
    );
    let snaps = series.periodic_only();
    anyhow::ensure!(!snaps.is_empty(), "no snapshots were taken");
    let dispatched = snaps.bpf("nr_dispatched", |s| s.var("nr_dispatched").as_u64());
    anyhow::ensure!(
        dispatched
            .iter_full()
            .any(|(_, _, v)| matches!(v, Ok(n) if *n > 0)),
        "nr_dispatched was never read above 0"
    );
    let samples = result.monitor.samples();
    let full = samples
        .iter()
        .filter(|s| s.cpus.as_ref().is_ok_and(|c| c.len() == 2))
        .count();
    anyhow::ensure!(
        full >= 3,
        "only {full} of {} periodic samples read both runqueues",
        samples.len()
    );
    println!(
        "kaslr: randomized {} slide {:#x} phys_base {:#x} page_offset_base {:#x}, \
         located {:.2}s after boot",
        p.randomized,
        p.slide,
        p.phys_base,
        p.page_offset_base,
        p.located_after.as_secs_f64()
    );
    if randomized {
        SLIDES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p.slide);
    }
    Ok(())
}

/// One randomized boot, located and read (see [`located_and_read`]).
#[ktstr_test(
    kaslr = true,
    scheduler = SCX,
    llcs = 1,
    cores = 2,
    duration_s = 2,
    num_snapshots = 2,
    post_vm = located_and_read
)]
fn kaslr_boot_is_located_and_read(ctx: &Ctx) -> Result<AssertResult> {
    report_text()?;
    scenarios::steady(ctx)
}

#[ktstr_test(
    harness_fixture = true,
    kaslr = true,
    scheduler = SCX,
    llcs = 1,
    cores = 2,
    duration_s = 1,
    num_snapshots = 2,
    post_vm = located_and_read
)]
fn kaslr_fixture_boot(ctx: &Ctx) -> Result<AssertResult> {
    report_text()?;
    scenarios::steady(ctx)
}

#[ktstr_test(
    harness_fixture = true,
    scheduler = SCX,
    llcs = 1,
    cores = 2,
    duration_s = 1,
    num_snapshots = 2,
    post_vm = fixed_and_read
)]
fn nokaslr_fixture_boot(ctx: &Ctx) -> Result<AssertResult> {
    report_text()?;
    scenarios::steady(ctx)
}

/// Both boot paths, alternating, three times each: the vmlinux at its link
/// address (checked, slide 0) and the bzImage randomized (located); each
/// prints its `boot-to-init`, the figures of the README's KASLR section.
#[ignore = "full: six boots, minutes with the slot waits; run with cargo xtask test --full"]
#[test]
fn both_boot_paths_are_placed_and_read() {
    for i in 0..3 {
        for name in ["kaslr::nokaslr_fixture_boot", "kaslr::kaslr_fixture_boot"] {
            // Cold: these are the boot paths' own figures.
            match run_test_started(name, false).0 {
                Outcome::Pass(_) => {}
                other => panic!("{name}, round {}: {other:?}", i + 1),
            }
        }
    }
}

/// Five randomized cold boots (a restore would reuse one of a few saved
/// slides): each located where its guest says, at least three distinct
/// slides (KASLR's entropy here is ~490 2 MiB slots).
#[ignore = "full: five randomized boots, minutes with the slot waits; run with cargo xtask test --full"]
#[test]
fn five_randomized_boots_show_three_slides() {
    for i in 0..5 {
        match run_test_started("kaslr::kaslr_fixture_boot", false).0 {
            Outcome::Pass(_) => {}
            other => panic!("randomized boot {}: {other:?}", i + 1),
        }
    }
    let slides = SLIDES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut distinct = slides.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!("kaslr: slides of 5 boots: {slides:#x?}");
    assert!(
        distinct.len() >= 3,
        "only {} distinct slides in 5 randomized boots: {slides:#x?}",
        distinct.len()
    );
}

/// Eight randomized tests restored from snapshots: each starts restored and
/// is located where its guest says; the slides come from the few saved
/// randomized guests (at most `KASLR_SNAPSHOTS`, 3), and not all from one
/// (the chance that 8 picks of 3 land on one is 0.05%).
#[ignore = "full: 8 restored randomized tests, up to 3 snapshots made first; run with cargo xtask test --full"]
#[test]
fn restored_kaslr_tests_pick_among_saved_slides() {
    SLIDES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    for i in 0..8 {
        match run_test_started("kaslr::kaslr_fixture_boot", true) {
            (Outcome::Pass(_), s) if s.start() == Some("restored") => {}
            other => panic!("restored randomized test {}: {other:?}", i + 1),
        }
    }
    let slides = SLIDES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut distinct = slides.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!("kaslr: slides of 8 restored tests: {slides:#x?}");
    assert!(
        (2..=3).contains(&distinct.len()),
        "{} distinct slides in 8 restored randomized tests (want 2 or 3 of the 3 saved): \
         {slides:#x?}",
        distinct.len()
    );
}
