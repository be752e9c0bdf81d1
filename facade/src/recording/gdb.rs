//! A replay handed to gdb: the replay runs to a moment (deterministically,
//! stopped there by the gate plugin), then QEMU's gdb stub takes the stopped
//! machine and gdb drives it forward with the kernel's symbols.
//!
//! gdb connects to a TCP address on the loopback that ktstr listens on;
//! ktstr then connects to QEMU's stub (a Unix socket, `-gdb unix:…`) and
//! relays the bytes both ways. On that connection QEMU stops every vCPU; the
//! one vCPU thread is still held by the gate plugin at the moment's block,
//! so it stops at that block's end, the same place in every replay. Once
//! gdb has the machine, what follows is gdb's: breakpoints and steps cut
//! the vCPUs' turns, and the replay is no longer held to its recording.
//! Reverse execution needs QEMU's own record/replay, which refuses guests
//! with more than one vCPU (docs/design/record-replay.md, section 1).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ktstr_guest_mem::KernelSymbols;

use super::RecordingError;
use crate::monitor::{Hold, Moment};

/// How long QEMU gets to take gdb's connection and ask its vCPUs to stop
/// before the gate lets the held vCPU thread go on to the end of its block.
const STUB_SETTLE: Duration = Duration::from_millis(300);

/// Where to hand a replay to gdb.
#[derive(Debug)]
pub struct GdbHold {
    /// The moment the replay runs to before gdb takes it.
    pub at: Moment,
    /// Where gdb connects (`target remote ADDR`): a loopback TCP listener.
    pub listener: TcpListener,
}

/// Copies `from` to `to` until either side closes, then shuts both down.
fn pump(mut from: impl Read, mut to: impl Write + Shut) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    to.shut();
}

/// Shutting a stream down both ways (either side's end ends the relay).
trait Shut {
    fn shut(&self);
}

impl Shut for TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Shut for UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// The gate's hold for `g`: at the moment, tell the user how to attach,
/// wait for gdb, connect it to QEMU's stub at `stub`; `gone` is set when
/// gdb leaves (or could not be connected).
pub(super) fn hold(g: GdbHold, stub: PathBuf, symbols: PathBuf, gone: Arc<AtomicBool>) -> Hold {
    let at = g.at;
    Hold {
        at,
        then: Box::new(move |count| {
            let addr = g
                .listener
                .local_addr()
                .map_or_else(|e| format!("(no address: {e})"), |a| a.to_string());
            eprintln!(
                "ktstr: the replay is stopped at {at}, after {count} guest instructions. Attach gdb \
                 (the kernel's symbols, from its kallsyms):\n  \
                 gdb -ex 'symbol-file {}' -ex 'target remote {addr}'\n\
                 ktstr: forward only (break, continue, step; reverse execution needs QEMU's own \
                 record/replay, which refuses guests with more than one vCPU); from here the run \
                 is gdb's and is not compared with its recording; quitting gdb ends the replay",
                symbols.display()
            );
            let relay = g
                .listener
                .accept()
                .map_err(|e| e.to_string())
                .and_then(|(tcp, _)| {
                    let unix = UnixStream::connect(&stub)
                        .map_err(|e| format!("QEMU's gdb stub at {}: {e}", stub.display()))?;
                    let (tcp2, unix2) = (
                        tcp.try_clone().map_err(|e| e.to_string())?,
                        unix.try_clone().map_err(|e| e.to_string())?,
                    );
                    let (a, b) = (Arc::clone(&gone), Arc::clone(&gone));
                    std::thread::spawn(move || {
                        pump(tcp, unix);
                        a.store(true, Ordering::Relaxed);
                    });
                    std::thread::spawn(move || {
                        pump(unix2, tcp2);
                        b.store(true, Ordering::Relaxed);
                    });
                    Ok(())
                });
            match relay {
                Ok(()) => std::thread::sleep(STUB_SETTLE),
                Err(e) => {
                    eprintln!("ktstr: gdb could not be connected: {e}");
                    gone.store(true, Ordering::Relaxed);
                }
            }
        }),
    }
}

/// The symbol file gdb loads, in the recording's directory.
pub const SYMBOL_FILE: &str = "kernel-symbols.elf";

/// Writes [`symbol_file`] of `vmlinux` into the recording's `dir`.
pub(super) fn write_symbol_file(
    dir: &Path,
    vmlinux: &Path,
    cache_root: &Path,
) -> Result<PathBuf, RecordingError> {
    let files =
        crate::monitor::kernel_files(vmlinux, cache_root).map_err(|e| RecordingError::Symbols {
            vmlinux: vmlinux.to_path_buf(),
            why: e.to_string(),
        })?;
    let path = dir.join(SYMBOL_FILE);
    std::fs::write(&path, symbol_file(&files.syms)).map_err(|source| RecordingError::File {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// One ELF64 section header.
struct Shdr {
    name: u32,
    ty: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

impl Shdr {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name.to_le_bytes());
        out.extend_from_slice(&self.ty.to_le_bytes());
        for w in [self.flags, self.addr, self.offset, self.size] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.link.to_le_bytes());
        out.extend_from_slice(&self.info.to_le_bytes());
        out.extend_from_slice(&self.align.to_le_bytes());
        out.extend_from_slice(&self.entsize.to_le_bytes());
    }
}

/// Lowest address of the kernel image's symbols (`__START_KERNEL_map`);
/// lower ones are per-CPU offsets and absolute values, not code or data.
const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// An ELF file that holds only the kernel's symbols, for gdb's
/// `symbol-file`: a distribution's vmlinux is stripped, so ktstr decodes the
/// symbols from the image's kallsyms tables ([`KernelSymbols`]) and writes
/// them back as an ELF symbol table over one section without contents that
/// spans the image. Functions (`t`, `T`) are `STT_FUNC`, the rest
/// `STT_OBJECT`; lowercase letters are local; each symbol's size reaches to
/// the next one, so gdb names the function around any address.
pub(crate) fn symbol_file(syms: &KernelSymbols) -> Vec<u8> {
    let mut all: Vec<_> = syms.iter().filter(|s| s.addr >= KERNEL_MAP).collect();
    all.sort_by_key(|s| (s.addr, s.kind.is_ascii_uppercase()));
    let (lo, hi) = match (all.first(), all.last()) {
        (Some(a), Some(b)) => (a.addr, b.addr + 1),
        _ => (KERNEL_MAP, KERNEL_MAP + 1),
    };
    // Locals first: ELF wants every local before the first global.
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| all[i].kind.is_ascii_uppercase());
    let first_global = order
        .iter()
        .position(|&i| all[i].kind.is_ascii_uppercase())
        .unwrap_or(order.len());
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24];
    for &i in &order {
        let s = &all[i];
        let size = all.get(i + 1).map_or(1, |n| n.addr.saturating_sub(s.addr));
        let name = u32::try_from(strtab.len()).unwrap_or(0);
        strtab.extend_from_slice(s.name.as_bytes());
        strtab.push(0);
        let kind: u8 = if matches!(s.kind, b't' | b'T' | b'w' | b'W') {
            2
        } else {
            1
        };
        let bind: u8 = u8::from(s.kind.is_ascii_uppercase());
        symtab.extend_from_slice(&name.to_le_bytes());
        symtab.push((bind << 4) | kind);
        symtab.push(0);
        symtab.extend_from_slice(&1u16.to_le_bytes());
        symtab.extend_from_slice(&s.addr.to_le_bytes());
        symtab.extend_from_slice(&size.to_le_bytes());
    }
    let shstrtab = b"\0.kernel\0.symtab\0.strtab\0.shstrtab\0";
    // Layout: header, symtab, strtab, shstrtab, section headers.
    let sym_off = 64u64;
    let str_off = sym_off + symtab.len() as u64;
    let shs_off = str_off + strtab.len() as u64;
    let sh_off = (shs_off + shstrtab.len() as u64).next_multiple_of(8);
    let mut out = Vec::with_capacity(sh_off as usize + 5 * 64);
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    for half in [2u16, 62, 1] {
        // e_type EXEC, e_machine x86-64, e_version (low half)
        out.extend_from_slice(&half.to_le_bytes());
    }
    out.extend_from_slice(&0u16.to_le_bytes());
    for word in [lo, 0, sh_off] {
        // e_entry, e_phoff, e_shoff
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 0, 64, 5, 4] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        out.extend_from_slice(&half.to_le_bytes());
    }
    out.extend_from_slice(&symtab);
    out.extend_from_slice(&strtab);
    out.extend_from_slice(shstrtab);
    out.resize(sh_off as usize, 0);
    let shdr = |name, ty, flags, addr, offset, size| Shdr {
        name,
        ty,
        flags,
        addr,
        offset,
        size,
        link: 0,
        info: 0,
        align: 1,
        entsize: 0,
    };
    let sections = [
        shdr(0, 0, 0, 0, 0, 0),
        // .kernel: SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, spanning the image.
        Shdr {
            align: 4096,
            ..shdr(1, 8, 0x6, lo, sh_off, hi - lo)
        },
        // .symtab: SHT_SYMTAB, linked to .strtab; info: the first global.
        Shdr {
            link: 3,
            info: u32::try_from(first_global + 1).unwrap_or(u32::MAX),
            align: 8,
            entsize: 24,
            ..shdr(9, 2, 0, 0, sym_off, symtab.len() as u64)
        },
        shdr(17, 3, 0, 0, str_off, strtab.len() as u64),
        shdr(25, 3, 0, 0, shs_off, shstrtab.len() as u64),
    ];
    for sh in &sections {
        sh.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

    #[test]
    fn the_symbol_file_is_an_elf_gdb_can_name_addresses_from() {
        let syms = KernelSymbols::from_entries([
            ("_text", 0xffff_ffff_8100_0000, b'T'),
            ("helper", 0xffff_ffff_8100_0100, b't'),
            ("schedule", 0xffff_ffff_8100_0200, b'T'),
            ("jiffies", 0xffff_ffff_8300_0000, b'D'),
            ("fixed_percpu_data", 0, b'A'),
        ]);
        let bytes = symbol_file(&syms);
        let elf = object::File::parse(&*bytes).expect("an ELF object parses it");
        let text = elf.section_by_name(".kernel").expect(".kernel");
        assert_eq!(text.address(), 0xffff_ffff_8100_0000);
        let got: Vec<(String, u64, u64, SymbolKind, bool)> = elf
            .symbols()
            .map(|s| {
                (
                    s.name().expect("name").to_string(),
                    s.address(),
                    s.size(),
                    s.kind(),
                    s.is_global(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "helper".into(),
                    0xffff_ffff_8100_0100,
                    0x100,
                    SymbolKind::Text,
                    false
                ),
                (
                    "_text".into(),
                    0xffff_ffff_8100_0000,
                    0x100,
                    SymbolKind::Text,
                    true
                ),
                (
                    "schedule".into(),
                    0xffff_ffff_8100_0200,
                    0x1ff_fe00,
                    SymbolKind::Text,
                    true
                ),
                (
                    "jiffies".into(),
                    0xffff_ffff_8300_0000,
                    1,
                    SymbolKind::Data,
                    true
                ),
            ]
        );
    }
}
