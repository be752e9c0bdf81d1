//! Against the real Debian 7.3 kernel (`cargo xtask kernel fetch`): member offsets and sizes
//! agree with pahole and bpftool, and a BPF program compiles against the dumped header.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

mod common;

use std::collections::HashMap;
use std::process::Command;

use ktstr_btf::{Btf, c_dump, elf};

fn kernel() -> (std::path::PathBuf, Vec<u8>) {
    let path = common::kernel_vmlinux();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// One member as pahole prints it: path, byte offset, bit in byte (bitfields), size column,
/// bitfield width.
#[derive(Debug)]
struct PaholeMember {
    path: String,
    offset: u64,
    bit: Option<u64>,
    size: u64,
    bits: Option<u32>,
}

/// Parse `pahole -C NAME` output: members with `/* offset size */` comments, members of
/// anonymous blocks under their plain name, members of named inline blocks under `name.`.
fn parse_pahole(text: &str) -> Vec<PaholeMember> {
    let mut frames: Vec<Vec<PaholeMember>> = vec![Vec::new()];
    for line in text.lines().skip(1) {
        let code = line.split("/*").next().unwrap().trim();
        let comment = line
            .split_once("/*")
            .and_then(|(_, c)| c.split_once("*/"))
            .map(|(c, _)| c.trim());
        if code.ends_with('{') {
            frames.push(Vec::new());
            continue;
        }
        if code.starts_with('}') {
            if frames.len() == 1 {
                break; // end of the outer struct
            }
            let inner = frames.pop().unwrap();
            let name = code
                .trim_start_matches('}')
                .trim()
                .trim_end_matches(';')
                .trim();
            let name = name.split("__attribute__").next().unwrap().trim();
            let outer = frames.last_mut().unwrap();
            if name.is_empty() {
                outer.extend(inner);
            } else {
                let (offset, size) = parse_offset_size(comment.unwrap_or(""));
                for mut m in inner {
                    m.path = format!("{name}.{}", m.path);
                    outer.push(m);
                }
                if let (Some(offset), Some(size)) = (offset, size) {
                    outer.push(PaholeMember {
                        path: name.to_string(),
                        offset,
                        bit: None,
                        size,
                        bits: None,
                    });
                }
            }
            continue;
        }
        let (Some(comment), true) = (comment, code.ends_with(';')) else {
            continue;
        };
        let decl = code.trim_end_matches(';');
        let decl = decl.split("__attribute__").next().unwrap().trim();
        let (decl, bits) = match decl.rsplit_once(':') {
            Some((d, b)) if b.trim().parse::<u32>().is_ok() => {
                (d.trim(), Some(b.trim().parse().unwrap()))
            }
            _ => (decl, None),
        };
        let name = member_name(decl);
        if name.is_empty() {
            continue;
        }
        let (offset, bit, size) = if bits.is_some() {
            // "2796: 0  4"
            let (o, rest) = comment.split_once(':').unwrap();
            let mut it = rest.split_whitespace();
            (
                o.trim().parse().unwrap(),
                Some(it.next().unwrap().parse().unwrap()),
                it.next().unwrap().parse().unwrap(),
            )
        } else {
            let (o, s) = parse_offset_size(comment);
            let (Some(o), Some(s)) = (o, s) else { continue };
            (o, None, s)
        };
        frames.last_mut().unwrap().push(PaholeMember {
            path: name,
            offset,
            bit,
            size,
            bits,
        });
    }
    frames.swap_remove(0)
}

fn parse_offset_size(comment: &str) -> (Option<u64>, Option<u64>) {
    let mut it = comment.split_whitespace().map(|w| w.parse::<u64>().ok());
    (it.next().flatten(), it.next().flatten())
}

/// The declared name in a C declarator: `foo`, `foo[16]`, `(*fn)(int)`, `*ptr`.
fn member_name(decl: &str) -> String {
    let d = match decl.find("(*") {
        Some(i) => &decl[i + 2..],
        None => decl.rsplit([' ', '*']).next().unwrap_or(""),
    };
    d.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn member_offsets_and_sizes_match_pahole() {
    let (path, bytes) = kernel();
    let btf = Btf::parse(elf::btf_section(&bytes).unwrap()).unwrap();
    let pahole = common::require_tool("pahole", "dwarves");
    let mut checked = 0;
    let mut per_struct = Vec::new();
    for name in common::STRUCTS {
        let out = Command::new(&pahole)
            .arg("-C")
            .arg(name)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pahole -C {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with(&format!("struct {name} {{")),
            "pahole printed no struct {name}:\n{text}"
        );
        let members = parse_pahole(&text);
        let id = btf.composite(name).unwrap();
        let (size_line, _) = text
            .rsplit_once("/* size: ")
            .unwrap()
            .1
            .split_once(',')
            .unwrap();
        assert_eq!(
            btf.size_of(id).unwrap(),
            size_line.trim().parse::<u64>().unwrap(),
            "sizeof(struct {name})"
        );
        let mut n = 0;
        for m in &members {
            let ours = btf
                .member(name, &m.path)
                .unwrap_or_else(|e| panic!("{name}.{}: {e} (pahole: {m:?})", m.path));
            match (m.bits, m.bit) {
                (Some(bits), Some(bit)) => {
                    // pahole: byte of the storage unit and bit inside it; the unit is `size` bytes.
                    assert_eq!(ours.bitfield_size, bits, "{name}.{} width", m.path);
                    assert_eq!(
                        ours.bit_offset,
                        m.offset * 8 + bit,
                        "{name}.{} bit offset",
                        m.path
                    );
                }
                _ => {
                    assert_eq!(ours.byte_offset(), m.offset, "{name}.{} offset", m.path);
                    assert_eq!(ours.bit_offset % 8, 0, "{name}.{}", m.path);
                    assert_eq!(
                        btf.size_of(ours.ty).unwrap(),
                        m.size,
                        "{name}.{} size",
                        m.path
                    );
                }
            }
            n += 1;
        }
        assert!(n > 0, "no members of {name} parsed from pahole");
        per_struct.push(format!("{name}: {n}"));
        checked += n;
    }
    eprintln!(
        "checked {checked} (struct, member) pairs against pahole: {}",
        per_struct.join(", ")
    );
    assert!(checked >= 200, "only {checked} pairs checked");
}

/// bpftool's raw dump as a table: id -> (kind, name, size or target, members).
struct RawDump {
    types: HashMap<u32, RawType>,
    by_name: HashMap<String, u32>,
}

#[derive(Default)]
struct RawType {
    kind: String,
    size: Option<u64>,
    target: Option<u32>,
    nelems: Option<u64>,
    members: Vec<(String, u32, u64)>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

fn parse_raw(text: &str) -> RawDump {
    let mut types = HashMap::new();
    let mut by_name = HashMap::new();
    let mut cur: Option<u32> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let (id, rest) = rest.split_once("] ").unwrap();
            let id: u32 = id.parse().unwrap();
            let mut words = rest.split_whitespace();
            let kind = words.next().unwrap().to_string();
            let name = rest.split('\'').nth(1).unwrap_or("").to_string();
            let t = RawType {
                size: field(rest, "size=").and_then(|s| s.parse().ok()),
                target: field(rest, "type_id=").and_then(|s| s.trim_end_matches(',').parse().ok()),
                nelems: field(rest, "nr_elems=").and_then(|s| s.parse().ok()),
                kind: kind.clone(),
                ..Default::default()
            };
            if kind == "STRUCT" && !name.is_empty() {
                by_name.entry(name).or_insert(id);
            }
            types.insert(id, t);
            cur = Some(id);
        } else if let (Some(id), Some(rest)) = (cur, line.strip_prefix('\t'))
            && let (Some(ty), Some(off)) = (field(rest, "type_id="), field(rest, "bits_offset="))
        {
            let name = rest.split('\'').nth(1).unwrap_or("");
            let name = if name == "(anon)" { "" } else { name }.to_string();
            let m = (name, ty.parse().unwrap(), off.parse().unwrap());
            types.get_mut(&id).unwrap().members.push(m);
        }
    }
    RawDump { types, by_name }
}

impl RawDump {
    fn resolve(&self, mut id: u32) -> u32 {
        while let Some(t) = self.types.get(&id) {
            match t.kind.as_str() {
                "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => {
                    id = t.target.unwrap()
                }
                _ => break,
            }
        }
        id
    }
    fn size(&self, id: u32) -> u64 {
        let id = self.resolve(id);
        let t = &self.types[&id];
        match t.kind.as_str() {
            "PTR" => 8,
            "ARRAY" => t.nelems.unwrap() * self.size(t.target.unwrap()),
            _ => t.size.unwrap(),
        }
    }
    /// (bit offset, type) of `name` in struct/union `id`, through anonymous members.
    fn find(&self, id: u32, name: &str) -> Option<(u64, u32)> {
        for (m, ty, off) in &self.types[&self.resolve(id)].members {
            if m == name {
                return Some((*off, *ty));
            }
            if m.is_empty()
                && let Some((o, t)) = self.find(*ty, name)
            {
                return Some((off + o, t));
            }
        }
        None
    }
    fn path(&self, root: &str, path: &str) -> (u64, u64) {
        let mut id = self.by_name[root];
        let mut off = 0;
        for comp in path.split('.') {
            let (o, t) = self
                .find(id, comp)
                .unwrap_or_else(|| panic!("bpftool: {root}.{path}: no {comp}"));
            off += o;
            id = t;
        }
        (off, self.size(id))
    }
}

#[test]
fn nested_member_paths_match_bpftool() {
    let (path, bytes) = kernel();
    let btf = Btf::parse(elf::btf_section(&bytes).unwrap()).unwrap();
    let bpftool = common::require_tool("bpftool", "bpftool");
    let out = Command::new(bpftool)
        .args(["btf", "dump", "file"])
        .arg(&path)
        .args(["format", "raw"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = parse_raw(&String::from_utf8(out.stdout).unwrap());
    let mut checked = 0;
    for name in common::STRUCTS {
        for p in common::member_paths(&btf, name, 3) {
            let ours = btf.member(name, &p).unwrap();
            if ours.is_bitfield() {
                continue;
            }
            let (bits, size) = raw.path(name, &p);
            assert_eq!(ours.bit_offset, bits, "{name}.{p} offset");
            assert_eq!(btf.size_of(ours.ty).unwrap(), size, "{name}.{p} size");
            checked += 1;
        }
    }
    for (s, p) in [
        ("rq", "scx.local_dsq.nr"),
        ("task_struct", "se.sum_exec_runtime"),
        ("task_struct", "scx.dsq_vtime"),
    ] {
        let ours = btf.member(s, p).unwrap();
        assert_eq!(ours.bit_offset, raw.path(s, p).0, "{s}.{p}");
    }
    eprintln!("checked {checked} dotted (struct, path) pairs against bpftool");
    assert!(checked >= 200, "only {checked} pairs checked");
}

#[test]
fn scheduler_enums_and_kfuncs() {
    let (_, bytes) = kernel();
    let btf = Btf::parse(elf::btf_section(&bytes).unwrap()).unwrap();
    assert_eq!(
        btf.enum_value("SCX_DSQ_GLOBAL").unwrap().as_u64(),
        (1 << 63) | 1
    );
    assert_eq!(
        btf.enum_value("SCX_EXIT_ERROR_STALL").unwrap().as_i64(),
        1026
    );
    let f = btf.func("scx_bpf_dsq_insert").unwrap();
    assert_eq!(f.params.len(), 4);
    assert_eq!(
        btf.type_name(f.params[0].ty).unwrap(),
        "struct task_struct *"
    );
    assert_eq!(f.params[0].name, "p");
}

#[test]
fn typed_values_decode_with_the_kernel_btf() {
    let (_, bytes) = kernel();
    let btf = Btf::parse(elf::btf_section(&bytes).unwrap()).unwrap();
    let enq = btf.find("scx_enq_flags").unwrap();
    // 7.3 has a multi-bit `__SCX_ENQ_INTERNAL_MASK` among its single bits: still flags.
    let wakeup = btf.enum_value("SCX_ENQ_WAKEUP").unwrap().as_u64();
    let head = btf.enum_value("SCX_ENQ_HEAD").unwrap().as_u64();
    assert_eq!(
        btf.format_flags(enq, wakeup | head | 0x2).unwrap(),
        "SCX_ENQ_WAKEUP|SCX_ENQ_HEAD|0x2"
    );
    let kind = btf.find("scx_exit_kind").unwrap();
    let d = btf.decode(kind, &1026u32.to_le_bytes()).unwrap();
    assert_eq!(d.to_string(), "SCX_EXIT_ERROR_STALL");
    // struct cpumask is NR_CPUS bits: a list, not 128 numbers.
    let mask = btf
        .find_kind("cpumask_t", ktstr_btf::Kind::Typedef)
        .unwrap();
    let mut bits = vec![0u8; btf.size_of(mask).unwrap() as usize];
    bits[0] = 0x0f;
    bits[1] = 0x01;
    assert_eq!(btf.decode(mask, &bits).unwrap().to_string(), "cpus(0-3,8)");
    // A whole task_struct of zeroes prints without panicking, strings and all.
    let task = btf.find("task_struct").unwrap();
    let zeros = vec![0u8; btf.size_of(task).unwrap() as usize];
    let text = btf.decode(task, &zeros).unwrap().to_string();
    assert!(
        text.contains("comm=\"\""),
        "{}",
        &text[..text.len().min(2000)]
    );
}

const BPF_PROG: &str = r#"
#include "vmlinux.h"

#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

SEC("struct_ops/ktstr_enqueue")
void ktstr_enqueue(struct task_struct *p, unsigned long long enq_flags)
{
	(void)p;
	(void)enq_flags;
}

SEC(".struct_ops.link")
struct sched_ext_ops ktstr_ops = {
	.enqueue = (void *)ktstr_enqueue,
	.timeout_ms = 5000,
	.flags = 0,
	.name = "ktstr_probe",
};

SEC("tp_btf/sched_switch")
int on_switch(unsigned long long *ctx)
{
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct rq *rq = (struct rq *)ctx[2];
	unsigned long long v = prev->scx.dsq_vtime + prev->se.sum_exec_runtime + prev->pid;
	v += rq->nr_running + rq->scx.nr_running + rq->scx.local_dsq.nr + rq->cpu;
	return (int)(v + ktstr_ops.timeout_ms);
}
"#;

#[test]
fn bpf_program_compiles_against_dumped_header() {
    let (_, bytes) = kernel();
    let btf = Btf::parse(elf::btf_section(&bytes).unwrap()).unwrap();
    let mut header = String::new();
    c_dump::write_header(&btf, &mut header).unwrap();
    let (asserts, n) = common::layout_asserts(&btf);
    assert!(n > 50_000, "only {n} layout assertions");
    eprintln!("{n} layout assertions");
    let mut src = String::from(BPF_PROG);
    for (s, p) in [
        ("rq", "scx.local_dsq.nr"),
        ("task_struct", "scx.dsq_vtime"),
        ("sched_ext_ops", "name"),
        ("sched_ext_ops", "timeout_ms"),
    ] {
        let off = btf.member(s, p).unwrap().byte_offset();
        src.push_str(&format!(
            "_Static_assert(__builtin_offsetof(struct {s}, {p}) == {off}, \"{s}.{p}\");\n"
        ));
    }
    src.push_str(&asserts);
    common::compile_bpf(&header, &src);
}
