//! Every kernel in the cache (`cargo ktstr kernel fetch 6.18 7.3`; `cargo xtask test`
//! fetches the newest and the newest 6.18.x): the host-side kallsyms decoder finds the
//! symbols the monitor needs in each, whatever layout its `scripts/kallsyms` wrote
//! (relative base after the offsets on 6.18, place-relative offsets on 7.x, absolute
//! per-CPU symbols on a 6.12 built from source).
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

use std::path::PathBuf;

use ktstr_guest_mem::kallsyms;
use object::{Object, ObjectSection};

#[test]
fn kallsyms_of_every_cached_kernel_decode() {
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ktstr")))
        .expect("neither KTSTR_CACHE_DIR nor HOME is set");
    let fetched = ktstr_kernel::KernelCache::new(cache.join("kernels"));
    let mut kernels = fetched.list();
    assert!(
        !kernels.is_empty(),
        "no cached kernel: run `cargo xtask kernel fetch`"
    );
    // Kernels built from source too, where there are any (`cargo ktstr kernel build`):
    // 6.12's tables use CONFIG_KALLSYMS_ABSOLUTE_PERCPU.
    kernels.extend(ktstr_kernel::built_cache(&fetched).list());
    let mut seen = Vec::new();
    for k in &kernels {
        let release = &k.metadata.release;
        let bytes = std::fs::read(k.vmlinux()).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        let syms =
            kallsyms::from_elf_bytes(&bytes).unwrap_or_else(|e| panic!("{release}: kallsyms: {e}"));
        let text = elf.section_by_name(".text").unwrap().address();
        assert_eq!(syms.address("_text"), Some(text), "{release}");
        for name in [
            "runqueues",
            "__per_cpu_offset",
            "init_task",
            "jiffies",
            "map_idr",
            "linux_banner",
        ] {
            assert!(syms.get(name).is_some(), "{release}: {name} missing");
        }
        // sched_ext's root: `scx_root` from 6.16, `scx_ops` before.
        assert!(
            syms.get("scx_root").is_some() || syms.get("scx_ops").is_some(),
            "{release}: neither scx_root nor scx_ops"
        );
        seen.push(format!("{release} ({} symbols)", syms.len()));
    }
    eprintln!("decoded: {}", seen.join(", "));
}
