//! Every walker over a crafted guest patched with arbitrary bytes: shared by the fuzz target
//! (`fuzz/fuzz_targets/walkers.rs`) and the stable replay and property tests
//! (`tests/fuzz_walkers.rs`). Results are ignored: the property is that nothing panics, hangs
//! or allocates without bound, whatever the guest's memory holds.

use ktstr_guest_mem::testkit::{Guest, TEXT};

/// Apply `data` as patches to a fresh crafted guest, then run every reader on it.
///
/// `data` is a sequence of records `[target u8][offset u16 LE][len u8][len bytes]`; the target
/// picks one of the crafted objects (or the page tables, by physical address) and the bytes
/// overwrite it at the offset. A record cut short ends the patching.
pub fn exercise(data: &[u8]) {
    let g = Guest::new();
    patch(&g, data);
    run(&g);
}

fn patch(g: &Guest, mut data: &[u8]) {
    let a = &g.addrs;
    let targets: [u64; 16] = [
        a.rqs[0],
        a.rqs[1],
        a.tasks[1],
        a.scx_sched,
        a.bucket_table,
        a.dsqs[0],
        a.dsqs[1],
        a.xa_node,
        a.prog_btf,
        a.prog_btf_data,
        a.bss_map,
        a.hash_map,
        a.stats_map,
        TEXT + 0x40_0000, // nr_cpu_ids, __per_cpu_offset, scx_root, map_idr
        0,                // page tables, by physical address
        a.data_map,
    ];
    while let [target, lo, hi, len, rest @ ..] = data {
        let len = usize::from(*len).min(rest.len());
        let (bytes, tail) = rest.split_at(len);
        let off = u64::from(u16::from_le_bytes([*lo, *hi]));
        match targets[usize::from(*target) % targets.len()] {
            0 => g.poke_phys(0x10_0000 + off, bytes),
            base => g.poke(base.wrapping_add(off), bytes),
        };
        data = tail;
    }
}

fn run(g: &Guest) {
    let k = g.kernel();
    let mut sink = String::new();
    let mut note = |r: Result<String, ktstr_guest_mem::Error>| match r {
        Ok(s) => sink.push_str(&s),
        Err(e) => sink.push_str(&e.to_string()),
    };
    note(k.rq_samples().map(|s| format!("{s:?}")));
    for cpu in [0, 1, 5, u32::MAX] {
        note(k.rq_sample(cpu).map(|s| format!("{s:?}")));
        note(k.rq(cpu).and_then(|rq| rq.decode()).map(|d| d.to_string()));
        note(
            k.rq(cpu)
                .and_then(|rq| rq.field("curr->comm"))
                .and_then(|v| v.string()),
        );
    }
    note(k.scheduler_name().map(|s| format!("{s:?}")));
    note(k.user_dsqs().map(|d| format!("{d:?}")));
    note(
        k.scx_sched()
            .and_then(|s| s.map(|s| s.decode().map(|d| d.to_string())).transpose())
            .map(|s| format!("{s:?}")),
    );
    match k.bpf_maps() {
        Ok(maps) => {
            for m in maps {
                if let Ok(t) = k.map_btf(&m) {
                    note(t.parse().map(|b| b.type_count().to_string()));
                    if let Ok(v) = k.array_value(&m, 0) {
                        note(t.format_value(&v));
                    }
                    if let Ok(entries) = k.hash_entries(&m) {
                        for (key, v) in entries.iter().take(8) {
                            note(t.format_key(key));
                            note(t.format_value(v));
                        }
                    }
                }
                note(
                    k.array_value(&m, m.max_entries.saturating_sub(1))
                        .map(|v| format!("{v:?}")),
                );
                note(k.percpu_array_value(&m, 0, 1).map(|v| format!("{v:?}")));
                note(k.hash_entries(&m).map(|v| v.len().to_string()));
                note(k.check_map(&m).map(|()| String::new()));
            }
        }
        Err(e) => note(Err(e)),
    }
    for name in ["nr_dispatched", "sched_name", "slice_ns", "missing"] {
        note(k.bpf_var(name).map(|v| format!("{v:?}")));
    }
    if let Ok(va) = k.symbol("jiffies") {
        note(k.read_cstr(va, 64));
    }
    std::hint::black_box(sink);
}
