//! Write the named seeds of the `walkers` fuzz corpus: each one corruption the reader must
//! survive, in the patch format of `tests/exercise/mod.rs`.
//!
//! `cargo run -p ktstr-guest-mem --example walker_fuzz_seeds -- guest-mem-reader/fuzz/corpus/walkers`

use ktstr_guest_mem::testkit::Guest;

/// One patch record: target index, offset, bytes.
fn rec(target: u8, off: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![target];
    v.extend_from_slice(&(off as u16).to_le_bytes());
    v.push(bytes.len() as u8);
    v.extend_from_slice(bytes);
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args_os().nth(1).ok_or("usage: <dir>")?);
    std::fs::create_dir_all(&dir)?;
    let g = Guest::new();
    let node = Guest::offset("scx_dispatch_q", "hash_node");
    let vmalloc_pml4_slot = ((0xffff_c900_0000_0000u64 >> 39) & 0x1ff) * 8;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-healthy", Vec::new()),
        (
            "seed-null-curr",
            rec(1, Guest::offset("rq", "curr"), &[0; 8]),
        ),
        (
            "seed-dsq-cycle",
            rec(6, node, &(g.addrs.dsqs[0] + node).to_le_bytes()),
        ),
        ("seed-bucket-count", rec(4, 0, &3u32.to_le_bytes())),
        ("seed-xa-shift", rec(7, 0, &[6])),
        (
            "seed-xa-self",
            [
                rec(7, 0, &[6]),
                rec(
                    7,
                    Guest::offset("xa_node", "slots"),
                    &(g.addrs.xa_node | 2).to_le_bytes(),
                ),
            ]
            .concat(),
        ),
        (
            "seed-btf-size",
            rec(
                8,
                Guest::offset("btf", "data_size"),
                &u32::MAX.to_le_bytes(),
            ),
        ),
        (
            "seed-btf-garbage",
            rec(9, 0, &[0x9f, 0xeb, 1, 0, 0xff, 0xff]),
        ),
        ("seed-vmalloc-unmapped", rec(14, vmalloc_pml4_slot, &[0; 8])),
        ("seed-nr-cpu-ids", rec(13, 0, &9000u32.to_le_bytes())),
        (
            "seed-map-id",
            rec(10, Guest::offset("bpf_map", "id"), &77u32.to_le_bytes()),
        ),
        (
            "seed-hash-buckets",
            rec(
                11,
                Guest::offset("bpf_htab", "n_buckets"),
                &(1u32 << 24).to_le_bytes(),
            ),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
