use std::time::Instant;

use super::*;
use crate::testkit::{Guest, btf::BPF_MAP_TYPE_HASH};

fn dump(g: &Guest) -> SchedulerDump {
    g.kernel().scheduler_dump(&DumpLimits::default())
}

fn section<'a>(d: &'a SchedulerDump, name: &str) -> &'a SectionDump {
    d.sections
        .iter()
        .find(|s| s.section == name)
        .unwrap_or_else(|| panic!("no section {name} in {d:?}"))
}

fn map<'a>(d: &'a SchedulerDump, name: &str) -> &'a MapDump {
    d.maps
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no map {name} in {d:?}"))
}

#[test]
fn the_crafted_scheduler_dumps_globals_maps_and_dsqs() {
    let g = Guest::new();
    let d = dump(&g);
    assert_eq!(
        d.scheduler.as_ref().expect("the name reads").as_deref(),
        Some("ktstr_fifo")
    );
    let bss = section(&d, ".bss").vars.as_ref().expect("bss reads");
    let vars: Vec<(&str, &str, Option<u64>)> = bss
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str(), v.int))
        .collect();
    assert_eq!(
        vars,
        [
            ("nr_enqueued", "42", Some(42)),
            ("nr_dispatched", "40", Some(40)),
            ("sched_name", "\"fifo\"", None)
        ]
    );
    let data = section(&d, ".data").vars.as_ref().expect("data reads");
    assert_eq!(data[0].value, "20000000");
    // A hash map typed by BTF: keys and values decoded.
    let ctx = map(&d, "task_ctx");
    assert_eq!((ctx.kind.as_str(), ctx.total), ("hash", Some(2)));
    let entries: Vec<(&str, &str)> = ctx
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            ("101", "{pid=101, weight=100}"),
            ("202", "{pid=202, weight=50}")
        ]
    );
    assert_eq!(ctx.note, None);
    // An array without BTF: values as integers, the count is its size.
    let stats = map(&d, "stats");
    assert_eq!(stats.total, Some(4));
    let v: Vec<&str> = stats.entries.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(v, ["1", "2", "3", "4"]);
    // DSQ 0x10: two tasks listed (the iterator's cursor skipped), three more counted.
    let dsqs = d.dsqs.as_ref().expect("DSQs read");
    let q = &dsqs[0];
    assert_eq!((q.name.as_str(), q.nr), ("0x10", 5));
    assert_eq!(
        q.tasks,
        [(301, "stress-0".to_string()), (302, "stress-1".to_string())]
    );
    assert_eq!(q.note.as_deref(), Some("3 more not shown"));
    let local = &dsqs[dsqs.len() - 1];
    assert_eq!((local.name.as_str(), local.nr), ("local cpu1", 2));
}

#[test]
fn a_bounded_dump_counts_what_it_leaves_out() {
    let g = Guest::new();
    let limits = DumpLimits {
        entries: 1,
        ..DumpLimits::default()
    };
    let d = g.kernel().scheduler_dump(&limits);
    let ctx = map(&d, "task_ctx");
    assert_eq!(
        (ctx.entries.len(), ctx.total, ctx.left_out()),
        (1, Some(2), 1)
    );
    let q = &d.dsqs.as_ref().expect("DSQs read")[0];
    assert_eq!(
        (q.tasks.len(), q.note.as_deref()),
        (1, Some("4 more not shown"))
    );
}

#[test]
fn a_map_freed_during_the_read_is_named_not_a_panic() {
    let g = Guest::new();
    let k = g.kernel();
    let maps = k.bpf_maps().expect("maps list");
    let htab = maps
        .iter()
        .find(|m| m.name == "task_ctx")
        .expect("task_ctx");
    // Freed and reused between the listing and the read: another id at its address.
    g.set(g.addrs.hash_map, "bpf_map", "id", 77);
    let d = k.map_dump(htab, &DumpLimits::default());
    let note = d.note.expect("a note");
    assert!(
        note.contains("changed or disappeared while it was read"),
        "{note}"
    );
}

#[test]
fn garbage_pointers_become_messages() {
    let g = Guest::new();
    // The hash map's bucket array points nowhere.
    g.set(
        g.addrs.hash_map,
        "bpf_htab",
        "buckets",
        0xdead_0000_0000_0000,
    );
    // The scheduler's DSQ table is garbage.
    g.set(g.addrs.scx_sched, "scx_sched", "dsq_hash.tbl", 0x1234_5678);
    let d = dump(&g);
    let note = map(&d, "task_ctx").note.clone().expect("a note");
    assert!(note.contains("reading stopped"), "{note}");
    assert!(d.dsqs.is_err(), "{:?}", d.dsqs);
    // The rest still reads.
    assert!(section(&d, ".bss").vars.is_ok());
    // map_idr itself garbage: the maps part says so.
    g.set(
        crate::testkit::VARS_MAP_IDR,
        "idr",
        "idr_rt.xa_head",
        0x4242_4242_0002,
    );
    let d = dump(&g);
    assert!(
        d.maps_error
            .as_deref()
            .is_some_and(|e| e.contains("map_idr")),
        "{d:?}"
    );
}

#[test]
fn a_scheduler_without_btf_is_dumped_raw_with_the_reason() {
    let g = Guest::new();
    g.set(g.addrs.bss_map, "bpf_map", "btf", 0);
    g.set(g.addrs.hash_map, "bpf_map", "btf", 0);
    let d = dump(&g);
    let bss = d
        .sections
        .iter()
        .find(|s| s.map == "ktstr_fi.bss")
        .expect("the bss map is still shown");
    assert_eq!(
        bss.vars
            .as_ref()
            .map_err(ToString::to_string)
            .err()
            .as_deref(),
        Some("the map has no BTF: its variables cannot be named")
    );
    let ctx = map(&d, "task_ctx");
    assert_eq!(ctx.entries[0].key, "101");
    assert!(
        ctx.entries[0].value.starts_with("6500000000000000"),
        "{ctx:?}"
    );
    // Garbage BTF: the magic check names it.
    let g = Guest::new();
    g.write(g.addrs.prog_btf_data, &[0, 0, 0, 0]);
    let d = dump(&g);
    let bss = section(&d, "ktstr_fi.bss");
    let e = bss.vars.as_ref().expect_err("no BTF magic").to_string();
    assert!(e.contains("BTF magic"), "{e}");
}

/// The bound that makes a dump affordable: a hash map of 2^20 entries (every bucket one
/// element, as a real 1M-entry map) dumps its first 16 and counts the rest in under a
/// second of host time. Synthetic guest memory: a VM scheduler with such a map costs
/// minutes of TCG time to fill.
#[test]
fn a_million_entry_hash_map_dumps_in_under_a_second() {
    const N: u64 = 1 << 20;
    let mut g = Guest::with_ram(256 << 20);
    let htab = g.heap(320);
    g.set(htab, "bpf_map", "map_type", u64::from(BPF_MAP_TYPE_HASH));
    g.set(htab, "bpf_map", "key_size", 4);
    g.set(htab, "bpf_map", "value_size", 8);
    g.set(htab, "bpf_map", "max_entries", N);
    g.set(htab, "bpf_map", "id", 9);
    g.set_bytes(htab, "bpf_map", "name", b"big\0");
    let buckets = g.big(N * 16);
    g.set(htab, "bpf_htab", "buckets", buckets);
    g.set(htab, "bpf_htab", "n_buckets", N);
    let key_off = Guest::offset("htab_elem", "key");
    let stride = (key_off + 16).next_multiple_of(16);
    let elems = g.big(N * stride);
    let mut bucket_bytes = vec![0u8; (N * 16) as usize];
    let mut elem_bytes = vec![0u8; (N * stride) as usize];
    for i in 0..N {
        let e = elems + i * stride;
        let b = (i * 16) as usize;
        bucket_bytes[b..b + 8].copy_from_slice(&e.to_le_bytes());
        let o = (i * stride) as usize;
        // next: the bucket's nulls marker; key i; value i * 10.
        elem_bytes[o..o + 8].copy_from_slice(&((i << 1) | 1).to_le_bytes());
        let k = o + key_off as usize;
        elem_bytes[k..k + 4].copy_from_slice(&(i as u32).to_le_bytes());
        elem_bytes[k + 8..k + 16].copy_from_slice(&(i * 10).to_le_bytes());
    }
    g.write(buckets, &bucket_bytes);
    g.write(elems, &elem_bytes);
    let k = g.kernel();
    let m = k.read_map(htab).expect("the map header reads");
    let t0 = Instant::now();
    let d = k.map_dump(&m, &DumpLimits::default());
    let took = t0.elapsed();
    assert_eq!(d.note, None);
    assert_eq!((d.total, d.entries.len()), (Some(N), 16));
    assert_eq!(
        (d.entries[3].key.as_str(), d.entries[3].value.as_str()),
        ("3", "30")
    );
    assert_eq!(d.left_out(), N - 16);
    eprintln!("dumped a {N}-entry hash map in {took:?}");
    assert!(took.as_secs_f64() < 1.0, "took {took:?}");
    // A smaller count budget says the count is a lower bound.
    let d = k.map_dump(
        &m,
        &DumpLimits {
            count_steps: 1000,
            ..DumpLimits::default()
        },
    );
    assert_eq!(d.total, Some(1000));
    assert!(
        d.note
            .as_deref()
            .is_some_and(|n| n.contains("at least 1000")),
        "{d:?}"
    );
}

/// A per-CPU array's entries come once per CPU: each CPU's copy at the element's per-CPU
/// pointer plus `__per_cpu_offset[cpu]`.
#[test]
fn a_per_cpu_array_dumps_every_cpu_s_copy() {
    use crate::testkit::{PER_CPU_START, btf::BPF_MAP_TYPE_PERCPU_ARRAY};
    let mut g = Guest::new();
    let pptrs = Guest::offset("bpf_array", "pptrs");
    let arr = g.heap(pptrs + 2 * 8);
    g.set(
        arr,
        "bpf_map",
        "map_type",
        u64::from(BPF_MAP_TYPE_PERCPU_ARRAY),
    );
    g.set(arr, "bpf_map", "key_size", 4);
    g.set(arr, "bpf_map", "value_size", 8);
    g.set(arr, "bpf_map", "max_entries", 2);
    g.set(arr, "bpf_map", "id", 8);
    g.set_bytes(arr, "bpf_map", "name", b"cpu_stats\0");
    // Element i lives at PER_CPU_START + 0x100 + 8 i in every CPU's area (the area of
    // CPU c starts 0x1000 before its runqueue).
    for i in 0..2u64 {
        g.write_u64(arr + pptrs + 8 * i, PER_CPU_START + 0x100 + 8 * i);
        for (cpu, rq) in g.addrs.rqs.clone().into_iter().enumerate() {
            g.write_u64(rq - 0x1000 + 0x100 + 8 * i, 1000 * (cpu as u64 + 1) + i);
        }
    }
    let k = g.kernel();
    let m = k.read_map(arr).expect("the map header reads");
    let d = k.map_dump(&m, &DumpLimits::default());
    assert_eq!(d.note, None);
    let got: Vec<(&str, Option<u32>, &str)> = d
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.cpu, e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("0", Some(0), "1000"),
            ("0", Some(1), "2000"),
            ("1", Some(0), "1001"),
            ("1", Some(1), "2001")
        ]
    );
    assert_eq!((d.total, d.left_out()), (Some(2), 0));
}
