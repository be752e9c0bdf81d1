//! The raw BTF of the running kernel (`/sys/kernel/btf/vmlinux`): parse it, and check that the
//! C header dumped from it compiles and reproduces every struct size and member offset.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

mod common;

use ktstr_btf::{Btf, c_dump};

const HOST_BTF: &str = "/sys/kernel/btf/vmlinux";

fn host_bytes() -> Vec<u8> {
    std::fs::read(HOST_BTF).unwrap_or_else(|e| {
        panic!("{HOST_BTF} cannot be read ({e}): the host kernel needs CONFIG_DEBUG_INFO_BTF=y")
    })
}

#[test]
fn host_raw_btf_parses_and_finds_scheduler_types() {
    let bytes = host_bytes();
    let btf = Btf::parse(&bytes).unwrap();
    assert!(btf.type_count() > 10_000);
    for name in ["task_struct", "rq", "cgroup", "bpf_map"] {
        let id = btf.composite(name).unwrap();
        assert!(btf.size_of(id).unwrap() > 0, "{name}");
    }
    let m = btf.member("task_struct", "se.sum_exec_runtime").unwrap();
    assert_eq!(btf.size_of(m.ty).unwrap(), 8);
    // Every size and alignment query answers on real data (within the work budget).
    for t in btf.types() {
        if matches!(t.kind(), ktstr_btf::Kind::Struct | ktstr_btf::Kind::Union) {
            btf.size_of(t.id()).unwrap();
            btf.align_of(t.id()).unwrap();
        }
    }
}

#[test]
fn host_header_compiles_with_exact_layouts() {
    let bytes = host_bytes();
    let btf = Btf::parse(&bytes).unwrap();
    let mut header = String::new();
    c_dump::write_header(&btf, &mut header).unwrap();
    let (asserts, n) = common::layout_asserts(&btf);
    assert!(n > 50_000, "only {n} assertions");
    eprintln!("{n} layout assertions");
    common::compile_bpf(&header, &format!("#include \"vmlinux.h\"\n{asserts}"));
}
