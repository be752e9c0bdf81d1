//! Print a struct's layout, pahole-style, from any kernel's BTF:
//! `cargo run -p ktstr-btf --example layout -- /path/to/vmlinux task_struct`.
//! The file is an ELF with a `.BTF` section (a `vmlinux`, a BPF object) or raw
//! BTF (`/sys/kernel/btf/vmlinux`, the default).

use ktstr_btf::{Btf, Kind, elf};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(name)) = (args.next(), args.next()) else {
        return Err(
            "usage: layout FILE STRUCT (FILE: a vmlinux or /sys/kernel/btf/vmlinux)".into(),
        );
    };
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let raw = if data.starts_with(b"\x7fELF") {
        elf::btf_section(&data)?
    } else {
        &data[..]
    };
    let btf = Btf::parse(raw)?;
    let id = btf.composite(&name)?;
    let ty = btf.resolve(id)?;
    let keyword = if ty.kind() == Kind::Union {
        "union"
    } else {
        "struct"
    };
    println!("{keyword} {name} {{");
    for m in ty.members() {
        let size = btf.size_of(m.ty)?;
        let field = if m.name.is_empty() {
            "(anonymous)"
        } else {
            m.name
        };
        if m.bitfield_size > 0 {
            let (byte, bit) = (m.bit_offset / 8, m.bit_offset % 8);
            println!(
                "    {:<40} {field}:{};  /* {byte}:{bit} */",
                btf.type_name(m.ty)?,
                m.bitfield_size
            );
        } else {
            println!(
                "    {:<40} {field};  /* {} {size} */",
                btf.type_name(m.ty)?,
                m.bit_offset / 8
            );
        }
    }
    println!(
        "}};  /* size: {}, align: {} */",
        btf.size_of(id)?,
        btf.align_of(id)?
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layout: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
