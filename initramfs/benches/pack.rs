//! Packing a 50 MB test binary with its libraries, cold and warm, against
//! `find | cpio -o -H newc` over the same files.
//!
//! The fixture is made at start-up: this bench binary (dynamically linked
//! against glibc, like a test binary) padded with pseudo-random bytes to 50 MB.
//! Trailing bytes after an ELF file's last section do not change how it loads.
//!
//! - `cold`: empty cache: closure, base archive written, then the single
//!   initrd file QEMU's `-initrd` takes (base + per-test archive).
//! - `warm_initrd_file`: cached base (stat check), per-test archive, the
//!   single initrd file QEMU takes (a locked slot: the overlay is written
//!   after a reused copy of the base).
//! - `warm_private_copy`: the same, but a fresh private copy of the base each
//!   time (`copy_file_range`), removed on drop: the design slots replace.
//! - `warm_parts`: cached base (stat check) + per-test archive bytes: what the
//!   own VMM receives (it copies the base file into guest memory itself).
//! - `find_cpio`: `find . | cpio -o -H newc > out` over a tree holding the same files.
//!
//! Run: `cargo bench -p ktstr-initramfs --bench pack`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ktstr_initramfs::{Archive, BaseSpec, Cache, LoaderConfig, closure};

const SIZE: u64 = 50 << 20;

/// Write the 50 MB fixture: this binary plus deterministic pseudo-random padding.
fn fixture(dir: &Path) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let path = dir.join("test-binary");
    fs::copy(&me, &path).expect("copy bench binary");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open fixture");
    let mut left = SIZE.saturating_sub(fs::metadata(&path).expect("stat").len());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            // xorshift64: incompressible, reproducible.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("pad fixture");
        left -= n as u64;
    }
    path
}

fn per_test() -> Vec<u8> {
    let mut a = Archive::new();
    a.add_bytes(
        "/ktstr/test",
        0o644,
        b"scheduler::tests::mixed_load".to_vec(),
    )
    .expect("add");
    a.add_bytes(
        "/ktstr/args",
        0o644,
        b"--topology 2s4c2t --duration 5s".to_vec(),
    )
    .expect("add");
    a.add_bytes("/ktstr/staged/sched.json", 0o644, vec![b'x'; 4096])
        .expect("add");
    a.to_vec().expect("per-test archive")
}

/// A tree holding the same files at the same paths, for `find | cpio`.
fn staged_tree(bin: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    let c = closure(bin, "/init", &LoaderConfig::default()).expect("closure");
    for f in &c.files {
        let dst = root.join(f.guest.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        fs::copy(&f.host, &dst).expect("stage file");
    }
    root
}

fn bench(c: &mut Criterion) {
    let work = tempfile::tempdir().expect("tempdir");
    let bin = fixture(work.path());
    let spec = BaseSpec::new().binary(&bin, "/init");
    let overlay = per_test();
    let mut group = c.benchmark_group("pack_50MB");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));

    let cold_dir = work.path().join("cold");
    group.bench_function("cold", |b| {
        b.iter(|| {
            let _ = fs::remove_dir_all(&cold_dir);
            let cache = Cache::open(&cold_dir).expect("cache");
            let base = cache.base(&spec).expect("build");
            assert!(!base.reused());
            base.with_overlay(&overlay).expect("initrd")
        })
    });

    let warm = Cache::open(work.path().join("warm")).expect("cache");
    warm.base(&spec).expect("prime the cache");
    group.bench_function("warm_initrd_file", |b| {
        b.iter(|| {
            let base = warm.base(&spec).expect("lookup");
            assert!(base.reused());
            base.with_overlay(&per_test()).expect("initrd")
        })
    });
    let private = work.path().join("private");
    fs::create_dir_all(&private).expect("mkdir");
    group.bench_function("warm_private_copy", |b| {
        b.iter(|| {
            let base = warm.base(&spec).expect("lookup");
            base.copy_with_overlay(&per_test(), &private).expect("initrd")
        })
    });
    group.bench_function("warm_parts", |b| {
        b.iter(|| {
            let base = warm.base(&spec).expect("lookup");
            assert!(base.reused());
            (base, per_test())
        })
    });

    let tree = staged_tree(&bin, work.path());
    let out = work.path().join("find-cpio.cpio");
    group.bench_function("find_cpio", |b| {
        b.iter(|| {
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find . | cpio -o -H newc --quiet > {}",
                    out.display()
                ))
                .current_dir(&tree)
                .stdout(Stdio::null())
                .status()
                .expect("GNU cpio is required for this benchmark: apt-get install -y cpio");
            assert!(status.success(), "find | cpio failed");
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
