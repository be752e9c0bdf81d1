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
