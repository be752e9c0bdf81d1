//! Dump a C header from BTF: `cargo run -p ktstr-btf --example dump_c -- FILE > vmlinux.h`.
//! FILE is raw BTF (`/sys/kernel/btf/vmlinux`) or an ELF file with a `.BTF` section.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".to_string());
    let data = std::fs::read(&path)?;
    let raw = if data.starts_with(b"\x7fELF") {
        ktstr_btf::elf::btf_section(&data)?
    } else {
        &data[..]
    };
    let t = std::time::Instant::now();
    let btf = ktstr_btf::Btf::parse(raw)?;
    eprintln!("parsed {} types in {:?}", btf.type_count(), t.elapsed());
    let mut out = String::new();
    let t = std::time::Instant::now();
    ktstr_btf::c_dump::write_header(&btf, &mut out)?;
    eprintln!("dumped {} bytes in {:?}", out.len(), t.elapsed());
    print!("{out}");
    Ok(())
}
