//! The sampler over ktstr-guest-mem's crafted guest (made-up layouts, every
//! structure the monitor walks), and over the bad inputs it must survive.

use std::time::Duration;

use ktstr_guest_mem::testkit::Guest;

use super::*;

fn sample(g: &Guest) -> Sample {
    Sampler::new(g.kernel()).sample(SampleKind::Periodic, Duration::from_millis(5))
}

#[test]
fn a_full_sample_of_the_crafted_guest() {
    let g = Guest::new();
    let s = sample(&g);
    let cpu1 = s.cpu(1).expect("CPU 1");
    assert_eq!(
        (cpu1.nr_running, cpu1.scx_nr_running, cpu1.local_dsq_nr),
        (Some(3), Some(2), Some(2))
    );
    assert_eq!(cpu1.curr_comm.as_deref(), Some("worker-1"));
    assert_eq!(s.scheduler, Ok(Some("ktstr_fifo".into())));
    let dsqs: Vec<(u64, u32)> = s
        .dsqs
        .as_ref()
        .expect("dsqs")
        .iter()
        .map(|d| (d.id, d.nr))
        .collect();
    assert_eq!(dsqs, [(0x10, 5), (0x11, 0), (0x12, 1)]);
    assert_eq!(s.deepest_dsq().map(|d| d.id), Some(0x10));
    assert_eq!(s.var("nr_dispatched").as_u64(), Ok(40));
    // The crafted kernel has no struct scx_event_stats: said, not guessed.
    assert!(
        matches!(s.events, Err(MonitorError::Missing(_))),
        "{:?}",
        s.events
    );
    let e = s.var("no_such_global").as_u64().expect_err("absent");
    assert!(matches!(e, MonitorError::NoSuchVar { .. }), "{e}");
}

#[test]
fn garbage_pointers_and_a_gone_map_are_errors_in_their_part_only() {
    let g = Guest::new();
    // scx_root points nowhere mapped.
    let root = g.syms.address("scx_root").expect("scx_root");
    g.write_u64(root, 0xffff_c900_dead_0000);
    // The .bss map no longer carries its id: freed and reused.
    g.set(g.addrs.bss_map, "bpf_map", "id", 77);
    let s = sample(&g);
    assert!(s.cpus.is_ok(), "{:?}", s.cpus);
    assert!(
        matches!(s.scheduler, Err(MonitorError::Read(_))),
        "{:?}",
        s.scheduler
    );
    assert!(matches!(s.dsqs, Err(MonitorError::Read(_))), "{:?}", s.dsqs);
    let e = s
        .var("nr_dispatched")
        .as_u64()
        .expect_err("the map is gone");
    assert!(matches!(e, MonitorError::NoSuchVar { .. }), "{e}");
    // Every CPU's runqueue garbage: an error value, no panic.
    g.write_u64(
        g.syms.address("__per_cpu_offset").expect("pcpu"),
        0xdead_0000_0000,
    );
    let s = sample(&g);
    assert!(s.cpus.is_err());
    assert!(!s.summary().is_empty());
}

#[test]
fn a_layout_from_the_kernels_own_page_table_symbol() {
    let g = Guest::new();
    // The crafted image has no init_top_pgt: a clear error, not a guess.
    let e = kernel_layout(&g.kernel()).expect_err("no init_top_pgt");
    assert!(e.to_string().contains("init_top_pgt"), "{e}");
}

#[test]
fn a_guest_that_has_not_counted_its_cpus_is_not_read() {
    let g = Guest::new();
    let s = Sampler::new(g.kernel())
        .with_max_cpus(1)
        .sample(SampleKind::Monitor, Duration::ZERO);
    let e = s.cpus.expect_err("nr_cpu_ids 2 > 1");
    assert!(e.to_string().contains("has not counted them yet"), "{e}");
    let s = Sampler::new(g.kernel())
        .with_max_cpus(2)
        .sample(SampleKind::Monitor, Duration::ZERO);
    assert!(s.cpus.is_ok(), "{:?}", s.cpus);
}
