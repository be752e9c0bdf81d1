//! ktstr-btf against btf-rs 2.0.0 on the same vmlinux BTF (the kernel the tests use:
//! `$KTSTR_KERNEL` or the newest `kernels/*/vmlinux` in the ktstr cache).
//!
//! (a) parse + name index; (b) 1,000 member-offset lookups cycling over >= 100 distinct
//! (struct, dotted path) pairs. Neither side memoizes; the btf-rs side uses its public API
//! plainly (see `btf_rs_member_offset`). Before timing, both sides must agree on every pair.
#![allow(clippy::unwrap_used)] // A benchmark's setup states its expectations with unwrap.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use btf_rs::{Btf as BtfRs, Type};
use criterion::{Criterion, criterion_group, criterion_main};
use ktstr_btf::Btf;

/// Follow typedefs and qualifiers, the way a btf-rs user writes it.
fn btf_rs_resolve(btf: &BtfRs, mut t: Type) -> Option<Type> {
    loop {
        t = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x).ok()?,
            Type::Const(x) => btf.resolve_chained_type(x).ok()?,
            Type::Volatile(x) => btf.resolve_chained_type(x).ok()?,
            Type::Restrict(x) => btf.resolve_chained_type(x).ok()?,
            Type::TypeTag(x) => btf.resolve_chained_type(x).ok()?,
            _ => return Some(t),
        };
    }
}

/// Bit offset and type of member `name` in a struct/union, through anonymous members.
fn btf_rs_find(btf: &BtfRs, t: &Type, name: &str) -> Option<(u32, Type)> {
    let s = match t {
        Type::Struct(s) | Type::Union(s) => s,
        _ => return None,
    };
    for m in &s.members {
        let m_name = btf.resolve_name(m).ok()?;
        if m_name == name {
            return Some((m.bit_offset(), btf.resolve_chained_type(m).ok()?));
        }
        if m_name.is_empty() {
            let inner = btf_rs_resolve(btf, btf.resolve_chained_type(m).ok()?)?;
            if let Some((off, ty)) = btf_rs_find(btf, &inner, name) {
                return Some((m.bit_offset() + off, ty));
            }
        }
    }
    None
}

/// The btf-rs side of (b): struct by name, then the dotted path.
fn btf_rs_member_offset(btf: &BtfRs, ty: &str, path: &str) -> Option<u32> {
    let mut cur = btf
        .resolve_types_by_name(ty)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_) | Type::Union(_)))?;
    let mut off = 0;
    for comp in path.split('.') {
        let (o, next) = btf_rs_find(btf, &cur, comp)?;
        off += o;
        cur = btf_rs_resolve(btf, next)?;
    }
    Some(off)
}

fn raw_btf() -> (String, Vec<u8>) {
    let path = common::kernel_vmlinux();
    let elf = std::fs::read(&path).unwrap();
    let raw = ktstr_btf::elf::btf_section(&elf).unwrap().to_vec();
    (path.display().to_string(), raw)
}

fn bench(c: &mut Criterion) {
    let (path, raw) = raw_btf();
    eprintln!("BTF of {path}: {} bytes", raw.len());
    let ours = Btf::parse(&raw).unwrap();
    let theirs = BtfRs::from_bytes(&raw).unwrap();

    // >= 100 distinct pairs over the scheduler structs, cross-checked between both parsers.
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for s in common::STRUCTS {
        for p in common::member_paths(&ours, s, 2).into_iter().take(20) {
            if ours.member(s, &p).unwrap().is_bitfield() {
                continue;
            }
            pairs.push((s, p));
        }
    }
    for (s, p) in &pairs {
        let a = ours.member(s, p).unwrap().bit_offset;
        let b = btf_rs_member_offset(&theirs, s, p).unwrap_or_else(|| panic!("btf-rs: {s}.{p}"));
        assert_eq!(a, u64::from(b), "{s}.{p}");
    }
    assert!(pairs.len() >= 100, "only {} pairs", pairs.len());
    eprintln!("{} distinct (struct, path) pairs agree", pairs.len());
    let lookups: Vec<(&str, &str)> = (0..1000)
        .map(|i| {
            let (s, p) = &pairs[i % pairs.len()];
            (*s, p.as_str())
        })
        .collect();

    let mut g = c.benchmark_group("parse_and_index");
    g.sample_size(20);
    g.bench_function("ktstr-btf", |b| {
        b.iter(|| Btf::parse(black_box(&raw)).unwrap())
    });
    g.bench_function("btf-rs", |b| {
        b.iter(|| BtfRs::from_bytes(black_box(&raw)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("1000_member_offsets");
    g.sample_size(20);
    g.bench_function("ktstr-btf", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for (s, p) in &lookups {
                sum += ours.member(black_box(s), black_box(p)).unwrap().bit_offset;
            }
            sum
        })
    });
    g.bench_function("btf-rs", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for (s, p) in &lookups {
                sum +=
                    u64::from(btf_rs_member_offset(&theirs, black_box(s), black_box(p)).unwrap());
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
