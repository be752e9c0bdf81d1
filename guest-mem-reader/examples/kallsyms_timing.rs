//! Time the symbol table's three paths on a kernel image: decode from the vmlinux, build and
//! write the cache, load the cache.
//!
//! `cargo run --release -p ktstr-guest-mem --example kallsyms_timing -- path/to/vmlinux`
//! (drop `--release` for the unoptimized test profile the facade's tests run in).

use std::time::Instant;

use ktstr_guest_mem::{KernelSymbols, kallsyms};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vmlinux = std::env::args_os()
        .nth(1)
        .ok_or("usage: kallsyms_timing <vmlinux>")?;
    let vmlinux = std::path::PathBuf::from(vmlinux);
    let dir = std::env::temp_dir().join(format!("kallsyms-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cache = dir.join("kallsyms.ktstr");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut decode = Vec::new();
    let mut load = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = kallsyms::from_vmlinux(&vmlinux)?.len();
        decode.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let t = Instant::now();
    KernelSymbols::load_or_build(&vmlinux, &cache)?;
    let build = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..5 {
        let t = Instant::now();
        KernelSymbols::load_or_build(&vmlinux, &cache)?;
        load.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{n} symbols; decode median {:.1} ms; decode+write cache {build:.1} ms ({} bytes); \
         cache load median {:.1} ms",
        median(decode),
        std::fs::metadata(&cache)?.len(),
        median(load)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
