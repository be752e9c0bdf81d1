//! Tests of typed-value decoding.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

use alloc::string::ToString;
use alloc::vec;

use super::*;
use crate::builder::BtfBuilder;
use crate::testdata::tiny;
use proptest::prelude::*;

fn tiny_btf(data: &[u8]) -> Btf<'_> {
    Btf::parse(data).unwrap()
}

#[test]
fn struct_with_nested_members_strings_pointers_and_bitfields() {
    let data = tiny();
    let btf = tiny_btf(&data);
    let task = btf.find("task_struct").unwrap();
    let mut b = vec![0u8; 48];
    b[0..8].copy_from_slice(&(-1i64).to_le_bytes()); // __state
    b[8] = 0b1010_0000; // flags_bits: 3 bits at bit 69 = byte 8 bit 5 -> 0b101
    b[12..16].copy_from_slice(&(-20i32).to_le_bytes());
    b[16..25].copy_from_slice(b"kworker/0");
    b[32..40].copy_from_slice(&0xffff_8880_0000_1000u64.to_le_bytes());
    b[40..48].copy_from_slice(&7u64.to_le_bytes());
    let v = btf.decode(task, &b).unwrap();
    assert_eq!(
        v.to_string(),
        "{__state=-1, flags_bits=5, prio=-20, comm=\"kworker/0\", \
         scx={dsq=0xffff888000001000, dsq_vtime=7}}"
    );
    assert_eq!(v.field("prio"), Some(&Decoded::Int(-20)));
    assert_eq!(
        v.field("scx").unwrap().field("dsq_vtime").unwrap().as_u64(),
        Some(7)
    );
}

#[test]
fn anonymous_unions_and_short_values() {
    let data = tiny();
    let btf = tiny_btf(&data);
    let rq = btf.find("rq").unwrap();
    let mut b = vec![0u8; 64];
    b[0..4].copy_from_slice(&3u32.to_le_bytes());
    b[40..48].copy_from_slice(&99u64.to_le_bytes());
    let v = btf.decode(rq, &b).unwrap();
    assert_eq!(v.field("nr_running").unwrap().as_u64(), Some(3));
    // The anonymous union's members are reachable by name through `field`.
    assert_eq!(v.field("clock").unwrap().as_u64(), Some(99));
    assert_eq!(v.field("clock_alt").unwrap().as_u64(), Some(99));
    // Cut the value short: what is missing is unavailable, not an error.
    let v = btf.decode(rq, &b[..44]).unwrap();
    assert_eq!(v.field("clock"), Some(&Decoded::Unavailable));
    assert_eq!(v.field("curr"), Some(&Decoded::Unavailable));
    assert_eq!(v.field("nr_running").unwrap().as_u64(), Some(3));
    assert_eq!(
        btf.decode(rq, &[]).unwrap().field("nr_running"),
        Some(&Decoded::Unavailable)
    );
}

#[test]
fn enums_flags_and_unknown_values() {
    let data = tiny();
    let btf = tiny_btf(&data);
    let kind = btf.find("scx_exit_kind").unwrap();
    let d = btf.decode(kind, &1025u32.to_le_bytes()).unwrap();
    assert_eq!(d.to_string(), "SCX_EXIT_ERROR_BPF");
    // Not single bits: an unknown value is plain hex, not a made-up combination.
    assert_eq!(
        btf.decode(kind, &3u32.to_le_bytes()).unwrap().to_string(),
        "0x3"
    );
    let flags = btf.find("scx_enq_flags").unwrap();
    let v: u64 = 1 | (1 << 32) | 0x100;
    let d = btf.decode(flags, &v.to_le_bytes()).unwrap();
    assert_eq!(d.to_string(), "SCX_ENQ_WAKEUP|SCX_ENQ_PREEMPT|0x100");
    assert_eq!(d.as_u64(), Some(v));
    assert_eq!(btf.format_flags(flags, 0x100).unwrap(), "0x100");
    assert_eq!(
        btf.enum_name(flags, 1 << 32).unwrap(),
        Some("SCX_ENQ_PREEMPT")
    );
    assert!(matches!(
        btf.enum_name(btf.find("rq").unwrap(), 0),
        Err(BtfError::WrongKind { .. })
    ));
    let global = btf.find("scx_dsq_id_flags").unwrap();
    let d = btf
        .decode(global, &((1u64 << 63) | 1).to_le_bytes())
        .unwrap();
    assert_eq!(d.to_string(), "SCX_DSQ_GLOBAL");
}

#[test]
fn cpumasks_print_as_cpu_lists() {
    let data = tiny();
    let btf = tiny_btf(&data);
    let m = btf.find("cpumask_t").unwrap();
    let mut b = [0u8; 16];
    b[0] = 0b0100_1111;
    b[8] = 0b11; // CPUs 64 and 65
    let d = btf.decode(m, &b).unwrap();
    assert_eq!(d.to_string(), "cpus(0-3,6,64-65)");
    let Decoded::Cpumask(l) = d else { panic!() };
    assert_eq!(l.count(), 7);
    assert!(l.contains(65) && !l.contains(5));
    assert_eq!(CpuList::from_bitmap(&[]).to_string(), "");
    assert_eq!(CpuList::from_bitmap(&[0xff; 2]).to_string(), "0-15");
}

#[test]
fn datasec_decodes_each_variable() {
    let data = tiny();
    let btf = tiny_btf(&data);
    let bss = btf.find_kind(".bss", Kind::Datasec).unwrap();
    let mut b = [0u8; 16];
    b[0] = 4;
    b[8] = 9;
    let d = btf.decode(bss, &b).unwrap();
    assert_eq!(d.to_string(), "{nr_enqueued=4, nr_dispatched=9}");
    let v = btf.datasec_var(".bss", "nr_dispatched").unwrap();
    let d = btf
        .decode(v.ty, &b[v.offset as usize..][..v.size as usize])
        .unwrap();
    assert_eq!(d.as_u64(), Some(9));
}

#[test]
fn budgets_bound_big_arrays_and_deep_nesting() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let big = b.array(int, int, u32::MAX);
    let empty = b.struct_type("empty", 0, &[]);
    let many_empty = b.array(empty, int, u32::MAX);
    let data = b.finish();
    let btf = Btf::parse(&data).unwrap();
    let d = btf.decode(big, &[1u8; 64]).unwrap();
    let Decoded::Array { elems, omitted } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(elems.len(), 4096);
    assert_eq!(*omitted, u64::from(u32::MAX) - 4096);
    assert_eq!(elems[16], Decoded::Unavailable);
    assert!(d.to_string().ends_with(", ... 4294963199 more]"));
    let d = btf.decode(many_empty, &[]).unwrap();
    assert!(matches!(d, Decoded::Array { omitted, .. } if omitted > 0));

    // A struct holding an array of itself through a typedef chain is nested, not looped.
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let s = b.next_id();
    let arr = TypeId(s.0 + 1);
    b.struct_type("s", 4, &[("a", arr, 0, 0)]);
    b.array(s, int, 1);
    let data = b.finish();
    let btf = Btf::parse(&data).unwrap();
    let limits = DecodeLimits {
        max_depth: u32::MAX,
        max_nodes: u32::MAX,
    };
    let d = btf.decode_with(s, &[0; 4], limits).unwrap();
    assert!(d.to_string().contains("{...}"));
}

#[test]
fn bitfield_extraction_crosses_bytes_and_sign_extends() {
    assert_eq!(extract_bits(&[0xff, 0x01], 4, 5), Some(0b11111));
    assert_eq!(extract_bits(&[0, 0x80], 15, 1), Some(1));
    assert_eq!(extract_bits(&[0xff; 17], 7, 128), Some(u128::MAX));
    assert_eq!(extract_bits(&[0xff; 2], 9, 8), None);
    assert_eq!(extract_bits(&[0xff; 2], u64::MAX, 8), None);
    assert_eq!(sign_extend(0b101, 3), -3);
    assert_eq!(sign_extend(0b011, 3), 3);
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let bo = b.int_encoded("_Bool", 1, 4, 0, 8);
    b.struct_type("bf", 4, &[("s", int, 0, 3), ("u", bo, 3, 1)]);
    let data = b.finish();
    let btf = Btf::parse(&data).unwrap();
    let d = btf
        .decode(btf.find("bf").unwrap(), &[0b1101, 0, 0, 0])
        .unwrap();
    assert_eq!(d.to_string(), "{s=-3, u=true}");
}

proptest! {
    /// Any bytes under every type of the synthetic BTF decode without panic, and printing
    /// the result does not panic either.
    #[test]
    fn arbitrary_values_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let data = tiny();
        let btf = tiny_btf(&data);
        for id in 0..btf.type_count() + 2 {
            if let Ok(d) = btf.decode(TypeId(id), &bytes) {
                let _ = d.to_string();
            }
        }
    }

    /// A u64 split into single-bit enumerators and unnamed bits prints back to the same
    /// value.
    #[test]
    fn flags_round_trip(v in any::<u64>()) {
        let data = tiny();
        let btf = tiny_btf(&data);
        let flags = btf.find("scx_enq_flags").unwrap();
        let d = btf.decode(flags, &v.to_le_bytes()).unwrap();
        prop_assert_eq!(d.as_u64(), Some(v));
        let s = d.to_string();
        let mut back = 0u64;
        for part in s.split('|') {
            back |= match part {
                "SCX_ENQ_WAKEUP" => 1,
                "SCX_ENQ_HEAD" => 1 << 4,
                "SCX_ENQ_PREEMPT" => 1 << 32,
                hex => u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap(),
            };
        }
        prop_assert_eq!(back, v);
    }

    /// The CPU list of a bitmap has exactly its set bits.
    #[test]
    fn cpu_list_matches_bits(bits in proptest::collection::vec(any::<u8>(), 0..32)) {
        let l = CpuList::from_bitmap(&bits);
        let ones: u64 = bits.iter().map(|b| u64::from(b.count_ones())).sum();
        prop_assert_eq!(l.count(), ones);
        for (i, b) in bits.iter().enumerate() {
            for bit in 0..8u32 {
                prop_assert_eq!(l.contains(i as u32 * 8 + bit), b & (1 << bit) != 0);
            }
        }
    }
}
