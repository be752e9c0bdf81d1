//! Compiles the scx-ktstr BPF scheduler (`scx-ktstr/ktstr.bpf.c`) into
//! `$OUT_DIR/ktstr.bpf.o`, which the loader embeds with `include_bytes!`.
//!
//! Needs clang (clang-19 on Debian bookworm, installed by `cargo xtask setup`)
//! and nothing from the network or a fetched kernel: the kernel types come
//! from the committed `scx-ktstr/vmlinux.h`, the libbpf headers from the
//! vendored libbpf that libbpf-sys builds (`DEP_BPF_INCLUDE`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Compilers tried in order when `KTSTR_CLANG` is not set.
const CLANGS: &[&str] = &["clang-19", "clang"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let src_dir = manifest_dir.join("scx-ktstr");
    let source = src_dir.join("ktstr.bpf.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!(
        "cargo:rerun-if-changed={}",
        src_dir.join("vmlinux.h").display()
    );
    println!("cargo:rerun-if-env-changed=KTSTR_CLANG");

    // vmlinux.h is the x86_64 kernel's; other architectures need their own dump.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    if arch != "x86_64" {
        fail(&format!(
            "scx-ktstr/vmlinux.h describes an x86_64 kernel; add a dump for {arch} \
             (scx-ktstr/regen-vmlinux.sh) before building on it"
        ));
    }

    let libbpf_include =
        env::var_os("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers as DEP_BPF_INCLUDE");
    let clang = find_clang();
    // The fixture, its copy with a planted verifier-complexity regression (an
    // unrolled loop in ktstr_enqueue) for `cargo ktstr verifier`'s gate, and
    // one the verifier rejects, for the failure text of a rejection, and one
    // with a BPF arena whose pages the failure dump counts.
    for (name, defines) in [
        ("ktstr.bpf.o", &[][..]),
        ("ktstr_planted.bpf.o", &["-DKTSTR_PLANTED_COMPLEXITY"][..]),
        ("ktstr_rejected.bpf.o", &["-DKTSTR_PLANTED_REJECT"][..]),
        ("ktstr_arena.bpf.o", &["-DKTSTR_ARENA"][..]),
    ] {
        compile(
            &clang,
            &libbpf_include,
            &src_dir,
            &source,
            &out_dir.join(name),
            defines,
        );
    }
}

fn compile(
    clang: &str,
    libbpf_include: &std::ffi::OsStr,
    src_dir: &std::path::Path,
    source: &std::path::Path,
    object: &std::path::Path,
    defines: &[&str],
) {
    let output = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-mcpu=v3", "-Wall"])
        // The 7.3 BTF dump has anonymous members of named struct types, a
        // Microsoft extension: without it some layouts come out silently wrong.
        .args(["-fms-extensions", "-Wno-microsoft-anon-tag"])
        .arg("-D__TARGET_ARCH_x86")
        .args(defines)
        .arg("-I")
        .arg(libbpf_include)
        .arg("-I")
        .arg(src_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {clang}: {e}")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        fail(&format!(
            "{clang} failed to compile {}:\n{stderr}",
            source.display()
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
}

/// The first working clang of `KTSTR_CLANG` or [`CLANGS`].
fn find_clang() -> String {
    let candidates: Vec<String> = match env::var("KTSTR_CLANG") {
        Ok(clang) => vec![clang],
        Err(_) => CLANGS.iter().map(|c| (*c).to_owned()).collect(),
    };
    for clang in &candidates {
        let works = Command::new(clang)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return clang.clone();
        }
    }
    fail(&format!(
        "no clang to compile the scx-ktstr BPF scheduler (tried {}); \
         run `cargo xtask setup` to install clang-19, or set KTSTR_CLANG",
        candidates.join(", ")
    ))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
