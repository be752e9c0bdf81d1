//! Every parser entry point and query over one input: shared by the fuzz target
//! (`fuzz/fuzz_targets/parse_and_query.rs`) and the stable corpus replay test
//! (`tests/fuzz_corpus.rs`), so what the fuzzer proved is re-checked on every `cargo test`.
//! Results are ignored: the property is that nothing panics, hangs or allocates without bound.

use std::fmt::Write as _;

use ktstr_btf::{Btf, Kind, TypeId, c_dump};

/// Parse `data` as base BTF and as split BTF on top of the small synthetic base, and run every
/// query on whatever parses.
pub fn exercise(data: &[u8]) {
    if let Ok(btf) = Btf::parse(data) {
        queries(&btf);
    } else if let Err(e) = Btf::parse(data) {
        let _ = e.to_string();
    }
    let base_bytes = ktstr_btf::testdata::tiny();
    if let Ok(base) = Btf::parse(&base_bytes) {
        match Btf::parse_split(data, &base) {
            Ok(split) => queries(&split),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

fn queries(btf: &Btf<'_>) {
    let mut sink = String::new();
    let count = btf.type_count();
    for probe in [count, count.saturating_add(1), u32::MAX] {
        let _ = btf.ty(TypeId(probe)).map_err(|e| e.to_string());
        let _ = btf.size_of(TypeId(probe));
    }
    for t in btf.all_types().take(256) {
        let id = t.id();
        let name = t.name();
        let _ = (t.kind(), t.vlen(), t.kind_flag(), t.size(), t.referenced());
        let _ = (t.int(), t.array(), t.linkage(), t.decl_tag_component());
        let _ = btf.ty(id);
        let _ = btf.resolve(id);
        let _ = btf.size_of(id);
        let _ = btf.align_of(id);
        let _ = btf.is_packed(id);
        if let Ok(n) = btf.type_name(id) {
            sink.push_str(&n);
        }
        let _ = btf.find(name);
        let _ = btf.find_kind(name, t.kind());
        let _ = btf.find_all(name).count();
        let _ = btf.composite(name);
        let mut first_member = None;
        for m in t.members().take(64) {
            if m.name.is_empty() {
                continue;
            }
            first_member.get_or_insert(m.name);
            let _ = btf.member_of(id, m.name);
            let _ = btf.member_of(id, &format!("{}[1]", m.name));
            let _ = btf.member_of(id, &format!("{}.{}", m.name, m.name));
            let _ = btf.member(name, m.name).map_err(|e| e.to_string());
        }
        if let Some(m) = first_member {
            let _ = btf.member(name, &format!("{m}[0][18446744073709551615]"));
        }
        let _ = btf.member_of(id, "");
        let _ = btf.member_of(id, "a..b[");
        // Typed-value decoding over a fixed pattern and a value cut short.
        for bytes in [&[0xa5u8; 64][..], &[0x01, 0x80, 0xff][..]] {
            if let Ok(d) = btf.decode(id, bytes) {
                sink.push_str(&d.to_string());
                let _ = (d.field(name), d.as_u64());
            }
        }
        let _ = btf.enum_name(id, u64::MAX);
        let _ = btf.format_flags(id, 0x8000_0000_0000_0041);
        for e in t.enumerators().take(64) {
            let _ = btf.enum_value(e.name);
            let _ = btf.enum_value_in(name, e.name);
            let _ = (e.value.as_i64(), e.value.as_u64());
        }
        let _ = t.params().count();
        if matches!(t.kind(), Kind::Func | Kind::FuncProto) {
            let _ = btf.func_of(id);
            let _ = btf.func(name);
        }
        if t.kind() == Kind::Datasec {
            if let Ok(vars) = btf.datasec_vars(name) {
                let names: Vec<&str> = vars.map(|v| v.name).take(64).collect();
                for v in names {
                    let _ = btf.datasec_var(name, v);
                }
            }
            let _ = t.sec_vars().count();
        }
    }
    let _ = btf.enum_value("SCX_DSQ_GLOBAL");
    let _ = btf.member("rq", "scx.local_dsq.nr");
    let mut header = String::new();
    if let Err(e) = c_dump::write_header(btf, &mut header) {
        let _ = write!(sink, "{e}");
    }
}
