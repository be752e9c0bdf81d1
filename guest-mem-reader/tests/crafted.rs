//! The reader over crafted guest memory (`testkit::Guest`): what a healthy guest reads as, and
//! what each kind of bad input turns into — a clear error value, never a panic or a hang.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

use ktstr_btf::{Btf, BtfBuilder};
use ktstr_guest_mem::testkit::{Guest, kernel_btf};
use ktstr_guest_mem::{AddressLayout, Error, GuestKernel, KernelSymbols, RqSample};

#[test]
fn runqueues_of_every_cpu() {
    let g = Guest::new();
    let k = g.kernel();
    let all = k.rq_samples().unwrap();
    assert_eq!(
        all,
        [
            RqSample {
                cpu: 0,
                nr_running: Some(1),
                clock: Some(1000),
                scx_nr_running: Some(0),
                local_dsq_nr: Some(0),
                curr_pid: Some(0),
                curr_comm: Some("swapper/0".into()),
            },
            RqSample {
                cpu: 1,
                nr_running: Some(3),
                clock: Some(2000),
                scx_nr_running: Some(2),
                local_dsq_nr: Some(2),
                curr_pid: Some(101),
                curr_comm: Some("worker-1".into()),
            },
        ]
    );
    let rq = k.rq(1).unwrap();
    assert_eq!(rq.addr(), g.addrs.rqs[1]);
    assert_eq!(rq.field("curr->pid").unwrap().i64().unwrap(), 101);
    // A field this kernel lacks is None; a malformed path is an error.
    assert!(rq.get("scx.nr_immed").unwrap().is_none());
    assert!(rq.get("no_such_field").unwrap().is_none());
    assert!(rq.field("curr->").is_err());
    let text = rq.decode().unwrap().to_string();
    assert!(text.contains("nr_running=3"), "{text}");
    assert!(matches!(
        k.rq_sample(2),
        Err(Error::NoSuchCpu {
            cpu: 2,
            nr_cpu_ids: 2
        })
    ));
    assert_eq!(
        k.read_u64(k.symbol("jiffies").unwrap()).unwrap(),
        4_294_937_296
    );
}

#[test]
fn a_null_curr_is_none_and_a_garbage_curr_is_an_error() {
    let g = Guest::new();
    g.set(g.addrs.rqs[1], "rq", "curr", 0);
    let s = g.kernel().rq_sample(1).unwrap();
    assert_eq!((s.curr_pid, s.curr_comm), (None, None));
    assert_eq!(s.nr_running, Some(3));
    // Into vmalloc space where nothing is mapped, and past guest RAM in the direct map.
    for bad in [0xffff_c900_dead_0000u64, 0xffff_8880_7000_0000, 0x1234] {
        g.set(g.addrs.rqs[1], "rq", "curr", bad);
        let e = g.kernel().rq_sample(1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotMapped { .. } | Error::NoPageTable { .. } | Error::NonCanonical { .. }
            ),
            "{bad:#x}: {e}"
        );
    }
    // A torn nr_cpu_ids.
    g.write(
        ktstr_guest_mem::testkit::TEXT + 0x40_0000,
        &0u32.to_le_bytes(),
    );
    assert!(matches!(
        g.kernel().rq_samples(),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn vmalloc_reads_cross_physically_scattered_pages() {
    let mut g = Guest::new();
    let va = g.vmalloc(3 * 4096);
    let pattern: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
    g.write(va, &pattern);
    let k = g.kernel();
    assert_eq!(
        k.read_vec(va + 100, 2 * 4096, "test").unwrap(),
        pattern[100..100 + 8192]
    );
    // The guard page after the area is not mapped.
    let e = k.read_vec(va + 3 * 4096 - 8, 16, "test").unwrap_err();
    assert!(matches!(e, Error::NotMapped { level: "PT", .. }), "{e}");
    assert!(matches!(
        k.read_vec(va, ktstr_guest_mem::MAX_READ + 1, "test"),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn without_a_page_table_only_image_and_direct_map_read() {
    let g = Guest::new();
    let k = GuestKernel::new(&g.mem, &g.syms, kernel_btf(), AddressLayout::nokaslr()).unwrap();
    assert_eq!(k.rq_sample(1).unwrap().nr_running, Some(3));
    let e = k.scheduler_name().unwrap_err();
    assert!(matches!(e, Error::NoPageTable { .. }), "{e}");
    assert!(e.to_string().contains("CR3"), "{e}");
    // page_offset_base read from the guest agrees with the default.
    let k = k.with_page_offset_base_from_guest().unwrap();
    assert_eq!(k.rq_sample(0).unwrap().clock, Some(1000));
}

#[test]
fn user_dsqs_and_the_scheduler() {
    let g = Guest::new();
    let k = g.kernel();
    assert_eq!(k.scheduler_name().unwrap().as_deref(), Some("ktstr_fifo"));
    let dsqs = k.user_dsqs().unwrap();
    assert_eq!(dsqs.len(), 3);
    assert_eq!(dsqs[0].addr, g.addrs.dsqs[0]);
    // No scheduler attached: no name, no DSQs, no error.
    let g2 = Guest::new();
    g2.write_u64(g2.syms.address("scx_root").unwrap(), 0);
    let k2 = g2.kernel();
    assert_eq!(k2.scheduler_name().unwrap(), None);
    assert!(k2.user_dsqs().unwrap().is_empty());
}

#[test]
fn torn_dsq_tables_are_errors() {
    let node = Guest::offset("scx_dispatch_q", "hash_node");
    // A cycle in a bucket chain: 0x11 points back at 0x10.
    let g = Guest::new();
    g.write_u64(g.addrs.dsqs[1] + node, g.addrs.dsqs[0] + node);
    let e = g.kernel().user_dsqs().unwrap_err();
    assert!(matches!(e, Error::WalkLimit { .. }), "{e}");
    // A garbage link.
    let g = Guest::new();
    g.write_u64(g.addrs.dsqs[1] + node, 0xffff_c900_0bad_0000);
    assert!(matches!(
        g.kernel().user_dsqs(),
        Err(Error::NotMapped { .. })
    ));
    // A bucket count that is not a power of two, or absurdly large.
    for size in [3u64, 1 << 30] {
        let g = Guest::new();
        g.set(g.addrs.bucket_table, "bucket_table", "size", size);
        let e = g.kernel().user_dsqs().unwrap_err();
        assert!(e.to_string().contains("buckets"), "{e}");
    }
    // A NULL table.
    let g = Guest::new();
    g.set(g.addrs.scx_sched, "scx_sched", "dsq_hash.tbl", 0);
    assert!(matches!(g.kernel().user_dsqs(), Err(Error::Null { .. })));
}

#[test]
fn bpf_maps_by_name_and_their_values() {
    let g = Guest::new();
    let k = g.kernel();
    let maps = k.bpf_maps().unwrap();
    let names: Vec<(u32, &str)> = maps.iter().map(|m| (m.id, m.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (1, "ktstr_fi.bss"),
            (2, "task_ctx"),
            (3, "stats"),
            (4, "ktstr_fi.data")
        ]
    );
    let bss = k.bpf_map("ktstr_fi.bss").unwrap();
    let types = k.map_btf(&bss).unwrap();
    let whole = types
        .format_value(&k.array_value(&bss, 0).unwrap())
        .unwrap();
    assert_eq!(
        whole,
        "{nr_enqueued=42, nr_dispatched=40, sched_name=\"fifo\"}"
    );
    assert_eq!(k.bpf_var("slice_ns").unwrap().as_u64(), Some(20_000_000));
    let v = k.bpf_var("nr_enqueued").unwrap();
    assert_eq!(
        (
            v.map.as_str(),
            v.offset,
            v.type_name.as_str(),
            v.text.as_str()
        ),
        ("ktstr_fi.bss", 0, "u64", "42")
    );

    let htab = k.bpf_map("task_ctx").unwrap();
    let types = k.map_btf(&htab).unwrap();
    let entries: Vec<(String, String)> = k
        .hash_entries(&htab)
        .unwrap()
        .iter()
        .map(|(key, v)| {
            (
                types.format_key(key).unwrap(),
                types.format_value(v).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("101".to_string(), "{pid=101, weight=100}".to_string()),
            ("202".to_string(), "{pid=202, weight=50}".to_string())
        ]
    );

    let stats = k.bpf_map("stats").unwrap();
    assert!(matches!(k.map_btf(&stats), Err(Error::MapWithoutBtf(_))));
    assert!(matches!(
        k.array_value(&stats, 4),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        k.hash_entries(&stats),
        Err(Error::WrongMapType { .. })
    ));
    assert!(matches!(
        k.percpu_array_value(&stats, 0, 0),
        Err(Error::WrongMapType { .. })
    ));
    assert!(matches!(k.bpf_map("nope"), Err(Error::NoSuchMap(_))));
}

#[test]
fn a_scheduler_without_bss_or_without_the_global() {
    let g = Guest::new();
    let e = g.kernel().bpf_var("no_such_global").unwrap_err();
    assert_eq!(
        e.to_string(),
        "no BPF global \"no_such_global\" in the data sections of the loaded maps \
         (ktstr_fi.bss, ktstr_fi.data)"
    );
    // Drop the .bss map from the idr: its globals are gone, .data's remain.
    let slots = g.addrs.xa_node + Guest::offset("xa_node", "slots");
    g.write_u64(slots + 8, 0);
    let k = g.kernel();
    let e = k.bpf_var("nr_dispatched").unwrap_err();
    assert!(e.to_string().contains("(ktstr_fi.data)"), "{e}");
    assert!(k.bpf_var("slice_ns").is_ok());
    assert!(matches!(
        k.bpf_map("ktstr_fi.bss"),
        Err(Error::NoSuchMap(_))
    ));
    // No data sections at all.
    g.write_u64(slots + 32, 0);
    let e = g.kernel().bpf_var("slice_ns").unwrap_err();
    assert!(e.to_string().contains("none with a data section"), "{e}");
}

#[test]
fn a_map_that_disappears_mid_run() {
    let g = Guest::new();
    let k = g.kernel();
    let bss = k.bpf_map("ktstr_fi.bss").unwrap();
    // Freed and the memory reused: another id at the same address.
    g.set(g.addrs.bss_map, "bpf_map", "id", 77);
    let e = k.array_value(&bss, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "BPF map \"ktstr_fi.bss\" (id 1) changed or disappeared while it was read"
    );
    assert!(matches!(k.check_map(&bss), Err(Error::MapGone { .. })));
    // The idr entry now disagrees with the map's id: left out of the listing.
    assert!(
        k.bpf_maps()
            .unwrap()
            .iter()
            .all(|m| m.name != "ktstr_fi.bss")
    );
    // Its memory unmapped altogether (the vmalloc area freed).
    let g = Guest::new();
    let k = g.kernel();
    let bss = k.bpf_map("ktstr_fi.bss").unwrap();
    let gone = ktstr_guest_mem::BpfMap {
        addr: 0xffff_c900_0fff_0000,
        ..bss
    };
    assert!(matches!(
        k.array_value(&gone, 0),
        Err(Error::NotMapped { .. })
    ));
    assert!(matches!(k.check_map(&gone), Err(Error::MapGone { .. })));
}

#[test]
fn garbage_program_btf_is_an_error() {
    type Case = (&'static str, u64, fn(&str) -> bool);
    let cases: [Case; 4] = [
        ("data", 0, |e| e.contains("NULL")),
        ("data", 0xffff_c900_0bad_0000, |e| e.contains("not mapped")),
        ("data_size", 0xffff_ffff, |e| e.contains("limit")),
        ("data_size", 1, |e| e.contains("BTF")),
    ];
    for (field, v, ok) in cases {
        let g = Guest::new();
        g.set(g.addrs.prog_btf, "btf", field, v);
        let e = g.kernel().bpf_var("nr_dispatched").unwrap_err().to_string();
        assert!(ok(&e), "{field}={v:#x}: {e}");
    }
    // Bytes that are not BTF at all.
    let g = Guest::new();
    g.write(g.addrs.prog_btf_data, &[0u8; 64]);
    let e = g.kernel().bpf_var("nr_dispatched").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn torn_idr_nodes_are_errors() {
    // A node whose shift does not fit under the root (a child pointing at itself).
    let g = Guest::new();
    g.set(g.addrs.xa_node, "xa_node", "shift", 6);
    let slots = g.addrs.xa_node + Guest::offset("xa_node", "slots");
    g.write_u64(slots, g.addrs.xa_node | 2);
    let e = g.kernel().bpf_maps().unwrap_err();
    assert!(
        e.to_string()
            .contains("shift 6 under a parent of shift Some(6)"),
        "{e}"
    );
    // A two-level tree: root shift 6 whose slot 1 holds the original leaf: ids 65..=68.
    let mut g = Guest::new();
    let root = g.heap(576);
    g.set(root, "xa_node", "shift", 6);
    let root_slots = root + Guest::offset("xa_node", "slots");
    g.write_u64(root_slots + 8, g.addrs.xa_node | 2);
    let map_idr = g.syms.address("map_idr").unwrap();
    g.set(map_idr, "idr", "idr_rt.xa_head", root | 2);
    for (i, m) in [g.addrs.bss_map, g.addrs.hash_map].into_iter().enumerate() {
        g.set(m, "bpf_map", "id", 65 + i as u64);
    }
    let ids: Vec<u32> = g
        .kernel()
        .bpf_maps()
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids,
        [65, 66],
        "maps 3 and 4 still say ids 3 and 4: left out"
    );
    // A value entry and a retry entry in the leaf are skipped, a garbage node pointer fails.
    let g = Guest::new();
    let slots = g.addrs.xa_node + Guest::offset("xa_node", "slots");
    g.write_u64(slots + 8, (5 << 1) | 1);
    g.write_u64(slots + 16, 0x402);
    assert_eq!(g.kernel().bpf_maps().unwrap().len(), 2);
    let map_idr = g.syms.address("map_idr").unwrap();
    g.set(map_idr, "idr", "idr_rt.xa_head", 0xffff_c900_0bad_0002);
    assert!(matches!(
        g.kernel().bpf_maps(),
        Err(Error::NotMapped { .. })
    ));
}

#[test]
fn a_kernel_whose_btf_lacks_the_types() {
    let g = Guest::new();
    let mut b = BtfBuilder::new();
    b.int("int", 4, true);
    let bytes = b.finish();
    let btf = Btf::parse(&bytes).unwrap();
    let k = GuestKernel::new(&g.mem, &g.syms, &btf, g.layout).unwrap();
    let e = k.rq_sample(0).unwrap_err();
    assert_eq!(e.to_string(), "no BTF type named \"rq\" (struct)");
    assert!(k.user_dsqs().is_err() && k.bpf_maps().is_err());
    // Symbols that are no kernel's.
    let syms = KernelSymbols::from_entries([("x", 1, b'T')]);
    let e = GuestKernel::new(&g.mem, &syms, kernel_btf(), g.layout).unwrap_err();
    assert!(matches!(e, Error::NoSymbol(ref s) if s == "_text"), "{e}");
}

#[test]
fn a_kernel_image_without_btf() {
    // This test binary is an ELF without a .BTF section.
    let me = std::env::current_exe().unwrap();
    let e = ktstr_guest_mem::image::read_btf(&me).unwrap_err();
    assert!(e.to_string().contains("no .BTF section"), "{e}");
    let e = ktstr_guest_mem::kallsyms::from_vmlinux(&me).unwrap_err();
    assert!(e.to_string().contains("kallsyms"), "{e}");
}

#[test]
fn a_comm_that_is_not_utf8_is_cut_on_a_char_boundary() {
    // Found by the fuzzer: 0xff bytes decode to 3-byte U+FFFD each.
    let g = Guest::new();
    g.set_bytes(g.addrs.tasks[1], "task_struct", "comm", &[0xff; 16]);
    let comm = g.kernel().rq_sample(1).unwrap().curr_comm.unwrap();
    assert_eq!(comm, "\u{fffd}".repeat(5));
}
