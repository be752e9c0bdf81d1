//! Shared by the integration tests: finding the kernel and the tools, building layout checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use ktstr_btf::{Btf, Kind};

/// The structs the acceptance checks and the benchmark span.
pub const STRUCTS: [&str; 10] = [
    "rq",
    "scx_rq",
    "task_struct",
    "sched_ext_entity",
    "scx_dispatch_q",
    "scx_sched",
    "bpf_map",
    "bpf_array",
    "btf",
    "cgroup",
];

/// The vmlinux ELF to test against: `$KTSTR_KERNEL` (a path, or a version of a cached
/// kernel), else the newest cached release under the cache root (as for a run).
/// Panics — the test fails, it never skips — with the command that fetches one.
pub fn kernel_vmlinux() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let spec = std::env::var("KTSTR_KERNEL").ok();
    ktstr_kernel::vmlinux_for_tests(
        spec.as_deref(),
        var("KTSTR_CACHE_DIR").as_deref(),
        var("XDG_CACHE_HOME").as_deref(),
        var("HOME").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Path of a required tool; the test fails (never skips) when it is missing.
pub fn require_tool(name: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is missing: install it with `apt-get install {debian_package}` (or `cargo xtask setup`)"
    );
}

/// The C name the header gives each named struct/union/enum (later duplicates get `___N`).
pub fn tag_names(btf: &Btf<'_>) -> HashMap<u32, String> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    let mut out = HashMap::new();
    for t in btf.all_types() {
        if t.name().is_empty()
            || !matches!(
                t.kind(),
                Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64
            )
        {
            continue;
        }
        let c = counts.entry(t.name()).or_insert(0);
        *c += 1;
        let kw = match t.kind() {
            Kind::Struct => "struct",
            Kind::Union => "union",
            _ => "enum",
        };
        let name = if *c > 1 {
            format!("{kw} {}___{c}", t.name())
        } else {
            format!("{kw} {}", t.name())
        };
        out.insert(t.id().0, name);
    }
    out
}

/// `_Static_assert`s that every named struct and union has the size BTF says, and every named,
/// non-bitfield member (found through this crate's `member_of`) the offset BTF says.
/// Returns the C text and the number of assertions.
pub fn layout_asserts(btf: &Btf<'_>) -> (String, usize) {
    let names = tag_names(btf);
    let mut c = String::new();
    let mut n = 0;
    for t in btf.all_types() {
        if !matches!(t.kind(), Kind::Struct | Kind::Union) || t.name().is_empty() {
            continue;
        }
        let cname = &names[&t.id().0];
        writeln!(
            c,
            "_Static_assert(sizeof({cname}) == {}, \"size of {cname}\");",
            t.size().unwrap()
        )
        .unwrap();
        n += 1;
        let mut member_names = Vec::new();
        named_members(btf, t.id(), &mut member_names, 0);
        for name in member_names {
            let info = btf.member_of(t.id(), name).unwrap();
            if info.is_bitfield() {
                continue;
            }
            writeln!(
                c,
                "_Static_assert(__builtin_offsetof({cname}, {name}) == {}, \"{cname}.{name}\");",
                info.byte_offset(),
            )
            .unwrap();
            n += 1;
        }
    }
    (c, n)
}

/// Names of the members of `id`, including those reached through anonymous members.
fn named_members<'a>(btf: &Btf<'a>, id: ktstr_btf::TypeId, out: &mut Vec<&'a str>, depth: u32) {
    let t = btf.resolve(id).unwrap();
    for m in t.members() {
        if m.name.is_empty() {
            if depth < 16 {
                named_members(btf, m.ty, out, depth + 1);
            }
        } else {
            out.push(m.name);
        }
    }
}

/// Dotted member paths of struct `name`: named members, members of anonymous members under
/// their plain name, and members of embedded structs and unions as `outer.inner`, down to
/// `depth` levels.
pub fn member_paths(btf: &Btf<'_>, name: &str, depth: u32) -> Vec<String> {
    let mut out = Vec::new();
    let id = btf.composite(name).unwrap();
    walk_paths(btf, id, "", depth, &mut out);
    out
}

fn walk_paths(
    btf: &Btf<'_>,
    id: ktstr_btf::TypeId,
    prefix: &str,
    depth: u32,
    out: &mut Vec<String>,
) {
    let t = btf.resolve(id).unwrap();
    for m in t.members() {
        let inner = btf.resolve(m.ty).unwrap();
        let composite = matches!(inner.kind(), Kind::Struct | Kind::Union);
        if m.name.is_empty() {
            if composite {
                walk_paths(btf, m.ty, prefix, depth, out);
            }
            continue;
        }
        let path = format!("{prefix}{}", m.name);
        out.push(path.clone());
        if composite && depth > 1 {
            walk_paths(btf, m.ty, &format!("{path}."), depth - 1, out);
        }
    }
}

/// Compile `source` with clang-19 for BPF next to `header` (as `vmlinux.h`); panics with
/// clang's output on failure.
pub fn compile_bpf(header: &str, source: &str) {
    let clang = require_tool("clang-19", "clang-19");
    let dir =
        std::env::temp_dir().join(format!("ktstr-btf-{}-{}", std::process::id(), source.len()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmlinux.h"), header).unwrap();
    std::fs::write(dir.join("prog.bpf.c"), source).unwrap();
    let out = Command::new(clang)
        .current_dir(&dir)
        .args([
            "-target",
            "bpf",
            "-O2",
            "-g",
            "-fms-extensions",
            "-Wno-microsoft-anon-tag",
            "-Werror",
            "-c",
            "prog.bpf.c",
            "-o",
            "prog.bpf.o",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "clang-19 failed:\n{}",
        &stderr[..stderr.len().min(20_000)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
