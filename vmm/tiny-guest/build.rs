//! Build-time work for ktstr-vmm's own tests (this crate is only its dev-dependency):
//!
//! - the tiny test guest (`entry.S`, `guest.c`, `link.ld`), compiled with the host's
//!   gcc into a PVH ELF kernel and wrapped in a bzImage container, for the KVM
//!   backend's tests;
//! - the static `/init` of the Linux-boot tests (`linux-init.c`).
//!
//! Nothing here depends on the build host's CPU: whether the Linux tests run
//! directly or in a nested L1 is decided when they run. When a step fails the
//! build still succeeds: the reason reaches the tests (`NotBuilt`), which fail
//! with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a step of the build failed. Written out by hand: a build script's
/// error becomes one line of text, not worth a build-dependency on thiserror.
#[derive(Debug)]
enum BuildError {
    /// The host's architecture cannot run the tiny guest's code.
    NotX86_64,
    /// A tool could not be started.
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A tool ran and failed.
    Failed { command: String, stderr: String },
    /// A file could not be read or written.
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The linked guest has no `image_end` symbol.
    NoImageEnd,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotX86_64 => {
                f.write_str("the tiny guest is x86_64 code; this target is another architecture")
            }
            BuildError::Spawn { program, source } => write!(f, "cannot run {program}: {source}"),
            BuildError::Failed { command, stderr } => write!(f, "{command} failed: {stderr}"),
            BuildError::File {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            BuildError::NoImageEnd => f.write_str("no image_end symbol in the tiny guest"),
        }
    }
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ktstr_tiny_guest)");
    println!("cargo::rerun-if-changed=build.rs");
    for source in ["entry.S", "guest.c", "link.ld", "linux-init.c"] {
        println!("cargo::rerun-if-changed={source}");
    }
    println!("cargo::rerun-if-env-changed=KTSTR_CC");

    let built = if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        Err(BuildError::NotX86_64)
    } else {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        build_tiny_guest(Path::new("."), &out).and_then(|()| build_linux_init(Path::new("."), &out))
    };
    match built {
        Ok(()) => println!("cargo::rustc-cfg=ktstr_tiny_guest"),
        // The build goes on; the tests that need the guest fail and say why.
        Err(why) => {
            // One line: cargo's directives end at the newline.
            let why = why.to_string().replace('\n', " / ");
            println!("cargo::warning=tiny guest not built: {why}");
            println!("cargo::rustc-env=KTSTR_TINY_GUEST_NOT_BUILT={why}");
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), BuildError> {
    let out = cmd.output().map_err(|source| BuildError::Spawn {
        program: format!("{:?}", cmd.get_program()),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Compiles the guest into `tiny-guest.elf` (PVH) and `tiny-guest.bzImage`.
fn build_tiny_guest(src: &Path, out: &Path) -> Result<(), BuildError> {
    let elf = out.join("tiny-guest.elf");
    let bin = out.join("tiny-guest.bin");
    // Instructions the development machine's software hypervisor cannot emulate
    // are kept out: no SSE/AVX, no CET's endbr64, no stack protector.
    run(
        Command::new(std::env::var("KTSTR_CC").unwrap_or_else(|_| "gcc".into()))
            .args([
                "-m64",
                "-O2",
                "-ffreestanding",
                "-nostdlib",
                "-static",
                "-fno-pic",
                "-no-pie",
                "-mgeneral-regs-only",
                "-mno-red-zone",
                "-fno-stack-protector",
                "-fcf-protection=none",
                "-fno-asynchronous-unwind-tables",
                "-Wall",
                "-Werror",
                "-Wl,--build-id=none",
                "-Wl,-z,noexecstack",
                "-Wl,-z,max-page-size=4096",
            ])
            .arg(format!("-Wl,-T,{}", src.join("link.ld").display()))
            .arg(src.join("entry.S"))
            .arg(src.join("guest.c"))
            .arg("-o")
            .arg(&elf),
    )?;
    run(Command::new("objcopy")
        .args(["-O", "binary", "-R", ".note.Xen", "-R", ".bss"])
        .arg(&elf)
        .arg(&bin))?;
    let payload = std::fs::read(&bin).map_err(|source| BuildError::File {
        action: "reading",
        path: bin.clone(),
        source,
    })?;
    let image = bzimage(&payload, image_size(&elf)?);
    let bz = out.join("tiny-guest.bzImage");
    std::fs::write(&bz, image).map_err(|source| BuildError::File {
        action: "writing",
        path: bz,
        source,
    })
}

/// The static `/init` of the Linux-boot tests (no libc: raw syscalls).
fn build_linux_init(src: &Path, out: &Path) -> Result<(), BuildError> {
    run(
        Command::new(std::env::var("KTSTR_CC").unwrap_or_else(|_| "gcc".into()))
            .args([
                "-O2",
                "-static",
                "-nostdlib",
                "-ffreestanding",
                "-fno-pic",
                "-no-pie",
                "-fno-stack-protector",
                "-mgeneral-regs-only",
                "-Wall",
                "-Werror",
                "-Wl,--build-id=none",
            ])
            .arg(src.join("linux-init.c"))
            .arg("-o")
            .arg(out.join("ktstr-linux-init")),
    )
}

/// Bytes from the load address to the end of .bss (`image_end` in link.ld).
fn image_size(elf: &Path) -> Result<u32, BuildError> {
    let out = Command::new("nm")
        .arg(elf)
        .output()
        .map_err(|source| BuildError::Spawn {
            program: "nm".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let end = text
        .lines()
        .find_map(|l| l.strip_suffix(" image_end"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|a| u32::from_str_radix(a, 16).ok())
        .ok_or(BuildError::NoImageEnd)?;
    Ok(end - LOAD_ADDRESS)
}

const LOAD_ADDRESS: u32 = 0x10_0000;

/// Wraps the protected-mode payload in a bzImage: a boot sector and one setup
/// sector holding the setup header of Documentation/arch/x86/boot.rst (protocol
/// 2.15), then the payload, which the loader places at `code32_start` and
/// enters at offset 0x200 in 64-bit mode.
fn bzimage(payload: &[u8], init_size: u32) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut img = vec![0u8; setup_len];
    let put = |img: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        img[off..off + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut img, 0x1f1, &[SETUP_SECTS]); // setup_sects
    let syssize = u32::try_from(payload.len().div_ceil(16)).expect("tiny payload");
    put(&mut img, 0x1f4, &syssize.to_le_bytes()); // syssize, 16-byte units
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut img, 0x200, &[0xeb, 0x66]); // jump over the header (real-mode entry, unused)
    put(&mut img, 0x202, b"HdrS"); // header magic
    put(&mut img, 0x206, &0x020fu16.to_le_bytes()); // protocol version 2.15
    put(&mut img, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &LOAD_ADDRESS.to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut img, 0x258, &u64::from(LOAD_ADDRESS).to_le_bytes()); // pref_address
    put(&mut img, 0x260, &init_size.to_le_bytes()); // init_size
    img.extend_from_slice(payload);
    img
}
