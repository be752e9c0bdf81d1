//! Against the real kernel image (`cargo xtask kernel fetch`): the symbols decoded from its
//! kallsyms tables agree with two independent sources in the same image — the exported-symbol
//! table `__ksymtab` (place-relative entries naming strings in `__ksymtab_strings`) and the
//! BTF `.data..percpu` section's variable offsets — and point where they should.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

mod common;

use std::collections::HashMap;

use ktstr_btf::{Btf, Kind};
use ktstr_guest_mem::{KernelSymbols, kallsyms};
use object::{Object, ObjectSection};

fn image() -> Vec<u8> {
    std::fs::read(common::kernel_vmlinux()).unwrap()
}

/// Bytes of the image at virtual address `addr`, from whichever section holds it.
fn at<'a>(elf: &object::File<'a>, addr: u64, len: usize) -> &'a [u8] {
    for s in elf.sections() {
        if s.address() <= addr && addr + len as u64 <= s.address() + s.size() {
            let data = s.data().unwrap();
            let off = (addr - s.address()) as usize;
            return &data[off..off + len];
        }
    }
    panic!("{addr:#x} is in no section");
}

#[test]
fn kallsyms_decode_finds_the_symbols_the_monitor_needs() {
    let bytes = image();
    let elf = object::File::parse(&*bytes).unwrap();
    let syms = kallsyms::from_elf_bytes(&bytes).unwrap();
    assert!(syms.len() > 100_000, "only {} symbols", syms.len());
    for name in [
        "runqueues",
        "__per_cpu_offset",
        "init_task",
        "jiffies",
        "map_idr",
        "scx_root",
        "page_offset_base",
        "nr_cpu_ids",
        "_text",
        "_end",
        "__per_cpu_start",
        "linux_banner",
    ] {
        assert!(syms.get(name).is_some(), "{name} missing");
    }
    let banner = syms.address("linux_banner").unwrap();
    assert_eq!(at(&elf, banner, 13), b"Linux version");
    let text = elf.section_by_name(".text").unwrap().address();
    assert_eq!(syms.address("_text"), Some(text));
    // Address order, and every name found again by name.
    let all: Vec<_> = syms.iter().collect();
    assert!(all.windows(2).all(|w| w[0].addr <= w[1].addr));
    for s in all.iter().step_by(97) {
        assert_eq!(syms.get(s.name).unwrap().name, s.name);
    }
    assert_eq!(syms.symbolize(banner + 3).unwrap().0.name, "linux_banner");
}

#[test]
fn kallsyms_agree_with_the_exported_symbol_table() {
    let bytes = image();
    let elf = object::File::parse(&*bytes).unwrap();
    let syms = kallsyms::from_elf_bytes(&bytes).unwrap();
    let tab = elf.section_by_name("__ksymtab").unwrap();
    let strs = elf.section_by_name("__ksymtab_strings").unwrap();
    let (tab_addr, data) = (tab.address(), tab.data().unwrap());
    let (str_addr, str_data) = (strs.address(), strs.data().unwrap());
    let mut checked = 0;
    // struct kernel_symbol { int value_offset, name_offset, namespace_offset; } (PREL32).
    for (i, e) in data.chunks_exact(12).enumerate() {
        let word = |k: usize| i64::from(i32::from_le_bytes(e[k..k + 4].try_into().unwrap()));
        let here = tab_addr + 12 * i as u64;
        let value = here.wrapping_add_signed(word(0));
        let name_at = (here + 4).wrapping_add_signed(word(4)) - str_addr;
        let name = &str_data[name_at as usize..];
        let name =
            std::str::from_utf8(&name[..name.iter().position(|&b| b == 0).unwrap()]).unwrap();
        // Exported symbols are global: the one `get` prefers over same-named local ones.
        assert_eq!(syms.address(name), Some(value), "exported {name}");
        assert!(syms.get(name).unwrap().kind.is_ascii_uppercase(), "{name}");
        checked += 1;
    }
    assert!(checked > 10_000, "only {checked} exported symbols");
    eprintln!("{checked} exported symbols agree with kallsyms");
}

#[test]
fn per_cpu_variables_agree_with_btf() {
    let bytes = image();
    let syms = kallsyms::from_elf_bytes(&bytes).unwrap();
    let btf = Btf::parse(ktstr_btf::elf::btf_section(&bytes).unwrap()).unwrap();
    let start = syms.address("__per_cpu_start").unwrap();
    let sec = btf.find_kind(".data..percpu", Kind::Datasec).unwrap();
    let mut n = 0;
    let names: HashMap<&str, u64> = btf
        .datasec_vars(".data..percpu")
        .unwrap()
        .map(|v| (v.name, start + u64::from(v.offset)))
        .collect();
    for (name, addr) in &names {
        assert_eq!(syms.address(name), Some(*addr), "per-CPU {name}");
        n += 1;
    }
    assert!(n > 100 && btf.ty(sec).unwrap().vlen() as usize >= n);
    eprintln!("{n} per-CPU variables agree with BTF");
}

#[test]
fn the_cache_is_rebuilt_for_another_image_and_loads_the_same_table() {
    let vmlinux = common::kernel_vmlinux();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kallsyms.ktstr");
    let built = KernelSymbols::load_or_build(&vmlinux, &cache).unwrap();
    let loaded = KernelSymbols::load_or_build(&vmlinux, &cache).unwrap();
    assert_eq!(built.len(), loaded.len());
    assert!(built.iter().zip(loaded.iter()).all(|(a, b)| a == b));
    assert_eq!(loaded.address("runqueues"), built.address("runqueues"));
    // A cache from a different image (other size) is not trusted: rebuilt from this one.
    let other = dir.path().join("other");
    std::fs::write(&other, b"\x7fELF too short").unwrap();
    assert!(KernelSymbols::load_or_build(&other, &cache).is_err());
    assert_eq!(
        KernelSymbols::load_cache(&cache).unwrap().len(),
        built.len(),
        "a failed build must leave the old cache alone"
    );
}

/// The image's allocated sections loaded into guest RAM where the boot loader puts them
/// (physical = virtual - `__START_KERNEL_map`, `nokaslr`): what the monitor sees at the very
/// start of boot, read through the real 7.3 BTF layouts.
#[test]
fn the_loaded_image_reads_through_the_real_btf() {
    use ktstr_guest_mem::{AddressLayout, GuestKernel, START_KERNEL_MAP};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    let bytes = image();
    let elf = object::File::parse(&*bytes).unwrap();
    let syms = kallsyms::from_elf_bytes(&bytes).unwrap();
    let btf_bytes = ktstr_btf::elf::btf_section(&bytes).unwrap();
    let btf = Btf::parse(btf_bytes).unwrap();
    let end = syms.address("_end").unwrap() - START_KERNEL_MAP;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (end as usize + (8 << 20)))])
        .unwrap();
    for s in elf.sections() {
        let Ok(data) = s.data() else { continue };
        if s.address() >= START_KERNEL_MAP
            && !data.is_empty()
            && s.address() < START_KERNEL_MAP + end
        {
            mem.write_slice(data, GuestAddress(s.address() - START_KERNEL_MAP))
                .unwrap();
        }
    }
    let k = GuestKernel::new(&mem, &syms, &btf, AddressLayout::nokaslr())
        .unwrap()
        .with_page_offset_base_from_guest()
        .unwrap();
    assert_eq!(k.layout().page_offset_base(), 0xffff_8880_0000_0000);
    let banner = k.read_cstr(k.symbol("linux_banner").unwrap(), 256).unwrap();
    assert!(banner.starts_with("Linux version 7."), "{banner}");
    // INIT_TASK: pid 0, comm "swapper", its own group leader.
    let init = k.global("init_task", "task_struct").unwrap();
    assert_eq!(init.field("pid").unwrap().i64().unwrap(), 0);
    assert_eq!(init.field("comm").unwrap().string().unwrap(), "swapper");
    assert_eq!(
        init.field("group_leader").unwrap().u64().unwrap(),
        init.addr()
    );
    assert_eq!(
        init.field("group_leader->comm").unwrap().string().unwrap(),
        "swapper"
    );
    let text = init.decode().unwrap().to_string();
    assert!(
        text.contains("comm=\"swapper\""),
        "{}",
        &text[..text.len().min(500)]
    );
    // Before boot every __per_cpu_offset is 0: CPU 0's runqueue is the template, all zeros,
    // and every field the monitor samples exists in 7.3's struct rq.
    let s = k.rq_sample(0).unwrap();
    assert_eq!(
        (
            s.nr_running,
            s.clock,
            s.scx_nr_running,
            s.local_dsq_nr,
            s.curr_pid
        ),
        (Some(0), Some(0), Some(0), Some(0), None)
    );
    assert!(
        k.rq_samples().unwrap().len() > 1,
        "nr_cpu_ids is NR_CPUS before boot"
    );
    // No scheduler, no maps yet.
    assert_eq!(k.scheduler_name().unwrap(), None);
    assert!(k.user_dsqs().unwrap().is_empty());
    assert!(k.bpf_maps().unwrap().is_empty());
    assert!(matches!(
        k.bpf_var("nr_dispatched"),
        Err(ktstr_guest_mem::Error::NoSuchVar { .. })
    ));
}

/// Every (struct, member path) the reader walks resolves in the real kernel's BTF: the crafted
/// guest's layouts are made up, so this is what ties the walkers to a real kernel.
#[test]
fn every_member_path_the_reader_uses_exists_in_the_kernel_btf() {
    let bytes = image();
    let btf = Btf::parse(ktstr_btf::elf::btf_section(&bytes).unwrap()).unwrap();
    let paths: &[(&str, &[&str])] = &[
        (
            "rq",
            &[
                "nr_running",
                "clock",
                "scx.nr_running",
                "scx.local_dsq.nr",
                "curr",
            ],
        ),
        ("task_struct", &["pid", "comm"]),
        ("scx_sched", &["ops.name", "dsq_hash"]),
        ("rhashtable", &["tbl"]),
        ("bucket_table", &["size", "nest", "buckets"]),
        ("rhash_head", &["next"]),
        ("scx_dispatch_q", &["id", "nr", "hash_node"]),
        ("xarray", &["xa_head"]),
        ("idr", &["idr_rt", "idr_base"]),
        ("xa_node", &["shift", "slots"]),
        ("btf", &["data", "data_size"]),
        (
            "bpf_map",
            &[
                "id",
                "name",
                "map_type",
                "key_size",
                "value_size",
                "max_entries",
                "btf",
                "btf_key_type_id",
                "btf_value_type_id",
            ],
        ),
        ("bpf_array", &["elem_size", "value", "pptrs"]),
        ("bpf_htab", &["buckets", "n_buckets"]),
        ("bucket", &["head.first"]),
        ("htab_elem", &["hash_node.next", "key"]),
    ];
    for (ty, members) in paths {
        for m in *members {
            btf.member(ty, m)
                .unwrap_or_else(|e| panic!("{ty}.{m}: {e}"));
        }
    }
    // The xarray walker knows 64 slots per node (XA_CHUNK_SHIFT 6).
    let slots = btf.member("xa_node", "slots").unwrap();
    assert_eq!(btf.ty(slots.ty).unwrap().array().unwrap().nelems, 64);
    // `runqueues` is typed by the per-CPU data section.
    let rq = btf.datasec_var(".data..percpu", "runqueues").unwrap();
    assert_eq!(btf.type_name(rq.ty).unwrap(), "struct rq");
}
