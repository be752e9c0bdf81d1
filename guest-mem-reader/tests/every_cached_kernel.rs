//! Every kernel in the cache (`cargo ktstr kernel fetch 6.18 7.3`; `cargo xtask test`
//! fetches the newest and the newest 6.18.x): the host-side kallsyms decoder finds the
//! symbols the monitor needs in each, whatever layout its `scripts/kallsyms` wrote
//! (relative base after the offsets on 6.18, place-relative offsets on 7.x).
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
    let kernels = ktstr_kernel::KernelCache::new(cache.join("kernels")).list();
    assert!(
        !kernels.is_empty(),
        "no cached kernel: run `cargo xtask kernel fetch`"
    );
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
            "scx_root",
            "linux_banner",
        ] {
            assert!(syms.get(name).is_some(), "{release}: {name} missing");
        }
        seen.push(format!("{release} ({} symbols)", syms.len()));
    }
    eprintln!("decoded: {}", seen.join(", "));
}
