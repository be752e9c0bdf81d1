//! Kernel image formats: the x86 bzImage container, its compressed payload,
//! and the checks that make an ELF `vmlinux` usable by ktstr.
//!
//! Pure functions over byte slices, so every failure mode is tested with
//! crafted bytes instead of real kernels.

#[cfg(feature = "fetch")]
use std::io::Read;

use object::{Object, ObjectSection};

use super::KernelError;

/// Offset of the setup header's `setup_sects` byte (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` magic of the setup header.
const HDRS_MAGIC_OFF: usize = 0x202;
/// Offset of `payload_offset` (u32, boot protocol 2.08+), relative to the
/// start of the protected-mode code.
const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length` (u32, boot protocol 2.08+).
const PAYLOAD_LENGTH: usize = 0x24c;
/// Offset of the boot protocol `version` (u16).
const VERSION: usize = 0x206;

/// The ELF note type carrying the PVH 32-bit entry point
/// (`XEN_ELFNOTE_PHYS32_ENTRY`, include/xen/interface/elfnote.h).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Upper bound on a decompressed kernel: 1 GiB. Real images are < 100 MiB; the
/// bound keeps a hostile payload from exhausting memory.
pub const MAX_VMLINUX_BYTES: u64 = 1 << 30;

/// The compression codec of a bzImage payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (`CONFIG_KERNEL_GZIP`).
    Gzip,
    /// xz (`CONFIG_KERNEL_XZ`).
    Xz,
    /// lz4 legacy frames (`CONFIG_KERNEL_LZ4`).
    Lz4,
    /// zstd (`CONFIG_KERNEL_ZSTD`), Debian's choice.
    Zstd,
    /// An uncompressed ELF payload (`CONFIG_KERNEL_UNCOMPRESSED`).
    None,
}

impl Codec {
    /// Names the codec from the payload's magic bytes.
    pub fn detect(payload: &[u8]) -> Result<Codec, KernelError> {
        const MAGICS: &[(&[u8], Codec)] = &[
            (&[0x1f, 0x8b], Codec::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Codec::Xz),
            (&[0x02, 0x21, 0x4c, 0x18], Codec::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Codec::Zstd),
            (b"\x7fELF", Codec::None),
        ];
        for (magic, codec) in MAGICS {
            if payload.starts_with(magic) {
                return Ok(*codec);
            }
        }
        let what = if payload.starts_with(b"BZh") {
            "bzip2"
        } else if payload.starts_with(&[0x5d, 0x00, 0x00]) {
            "lzma"
        } else if payload.starts_with(&[0x89, b'L', b'Z', b'O']) {
            "lzo"
        } else {
            "unknown"
        };
        Err(KernelError::UnsupportedCodec {
            codec: what.to_string(),
        })
    }
}

/// Where the compressed vmlinux sits inside a bzImage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Byte offset of the payload in the bzImage file.
    pub offset: usize,
    /// Length of the payload in bytes.
    pub len: usize,
    /// The payload's codec.
    pub codec: Codec,
}

/// Returns true if `bytes` starts like an x86 bzImage (setup header magic `HdrS`).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(HDRS_MAGIC_OFF..HDRS_MAGIC_OFF + 4) == Some(b"HdrS")
}

/// Returns true if `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn read_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Locates the compressed payload of a bzImage through its setup header.
pub fn locate_payload(bz: &[u8]) -> Result<Payload, KernelError> {
    if !is_bzimage(bz) {
        return Err(KernelError::Corrupt {
            what: "no bzImage setup header (magic HdrS at 0x202)".into(),
        });
    }
    let version = bz
        .get(VERSION..VERSION + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    if version < 0x0208 {
        return Err(KernelError::Corrupt {
            what: format!("boot protocol {version:#x} predates payload_offset (needs 2.08+)"),
        });
    }
    // A zero setup_sects means 4 by the boot protocol's legacy rule.
    let setup_sects = match bz[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let truncated = || KernelError::Corrupt {
        what: "bzImage truncated inside the setup header".into(),
    };
    let rel = read_u32(bz, PAYLOAD_OFFSET).ok_or_else(truncated)? as usize;
    let len = read_u32(bz, PAYLOAD_LENGTH).ok_or_else(truncated)? as usize;
    let offset = pm_start.checked_add(rel).ok_or_else(truncated)?;
    let end = offset.checked_add(len).ok_or_else(truncated)?;
    if len == 0 || end > bz.len() {
        return Err(KernelError::Corrupt {
            what: format!(
                "payload [{offset:#x}, +{len:#x}) lies outside the {} byte image (truncated download?)",
                bz.len()
            ),
        });
    }
    let codec = Codec::detect(&bz[offset..end])?;
    Ok(Payload { offset, len, codec })
}

#[cfg(feature = "fetch")]
/// Reads at most [`MAX_VMLINUX_BYTES`] from a decoder, naming the codec on failure.
fn read_bounded(mut r: impl Read, codec: Codec) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    (&mut r)
        .take(MAX_VMLINUX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| KernelError::Decompress {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() as u64 > MAX_VMLINUX_BYTES {
        return Err(KernelError::Decompress {
            codec,
            reason: format!("output exceeds {MAX_VMLINUX_BYTES} bytes"),
        });
    }
    Ok(out)
}

/// A sink that refuses to grow past [`MAX_VMLINUX_BYTES`].
#[cfg(feature = "fetch")]
struct Limited(Vec<u8>);

#[cfg(feature = "fetch")]
impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.0.len() + buf.len()) as u64 > MAX_VMLINUX_BYTES {
            return Err(std::io::Error::other(format!(
                "output exceeds {MAX_VMLINUX_BYTES} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes the kernel's legacy lz4 format (`lz4 -l`): a magic, then blocks
/// each prefixed by a little-endian compressed length, each expanding to at
/// most 8 MiB (lib/decompress_unlz4.c). The kernel build appends the
/// uncompressed size as a trailing u32, which ends the block stream.
#[cfg(feature = "fetch")]
fn unlz4_legacy(data: &[u8]) -> Result<Vec<u8>, KernelError> {
    const BLOCK: usize = 8 << 20;
    let err = |reason: String| KernelError::Decompress {
        codec: Codec::Lz4,
        reason,
    };
    let mut pos = 4; // magic
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK];
    while let Some(clen) = read_u32(data, pos) {
        let clen = clen as usize;
        // A second legacy magic starts a new stream; the trailing size ends it.
        if clen == 0x184c_2102 {
            pos += 4;
            continue;
        }
        let start = pos + 4;
        let Some(chunk) = start.checked_add(clen).and_then(|end| data.get(start..end)) else {
            if data.len() - pos == 4 && !out.is_empty() {
                break; // the appended uncompressed size
            }
            return Err(err(format!(
                "block at {pos:#x} runs past the end of the payload"
            )));
        };
        let n = lz4_flex::block::decompress_into(chunk, &mut block)
            .map_err(|e| err(format!("block at {pos:#x}: {e}")))?;
        if (out.len() + n) as u64 > MAX_VMLINUX_BYTES {
            return Err(err(format!("output exceeds {MAX_VMLINUX_BYTES} bytes")));
        }
        out.extend_from_slice(&block[..n]);
        pos = start + clen;
    }
    if out.is_empty() {
        return Err(err("no lz4 block found".into()));
    }
    Ok(out)
}

#[cfg(feature = "fetch")]
/// Decompresses a bzImage payload into the ELF `vmlinux`.
pub fn decompress(payload: &[u8], codec: Codec) -> Result<Vec<u8>, KernelError> {
    let out = match codec {
        Codec::None => payload.to_vec(),
        Codec::Gzip => read_bounded(flate2::read::GzDecoder::new(payload), codec)?,
        Codec::Zstd => {
            let dec = ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| {
                KernelError::Decompress {
                    codec,
                    reason: e.to_string(),
                }
            })?;
            read_bounded(dec, codec)?
        }
        Codec::Xz => {
            // The kernel build appends the uncompressed size (4 bytes) after
            // the xz stream; xz readers reject it as bad stream padding.
            let stream = if payload.len() > 4 {
                &payload[..payload.len() - 4]
            } else {
                payload
            };
            let mut out = Limited(Vec::new());
            let mut input = std::io::BufReader::new(stream);
            lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| KernelError::Decompress {
                codec,
                reason: e.to_string(),
            })?;
            out.0
        }
        Codec::Lz4 => unlz4_legacy(payload)?,
    };
    if !is_elf(&out) {
        return Err(KernelError::Corrupt {
            what: format!("the {codec:?} payload did not decompress to an ELF file"),
        });
    }
    Ok(out)
}

#[cfg(feature = "fetch")]
/// Extracts the ELF `vmlinux` from a bzImage.
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>, KernelError> {
    let p = locate_payload(bz)?;
    decompress(&bz[p.offset..p.offset + p.len], p.codec)
}

/// What ktstr needs to know about a `vmlinux` ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmlinuxInfo {
    /// Size of the `.BTF` section in bytes (non-zero once validated).
    pub btf_bytes: u64,
    /// Whether the image carries a PVH entry note, so QEMU can boot it directly.
    pub pvh_entry: bool,
}

/// Checks that `bytes` is an x86-64 ELF with a non-empty `.BTF` section.
pub fn inspect_vmlinux(bytes: &[u8]) -> Result<VmlinuxInfo, KernelError> {
    let file = object::File::parse(bytes).map_err(|e| KernelError::Corrupt {
        what: format!("vmlinux is not a readable ELF file: {e}"),
    })?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(KernelError::Corrupt {
            what: format!(
                "vmlinux is built for {:?}, ktstr boots x86_64 kernels",
                file.architecture()
            ),
        });
    }
    let btf_bytes = file.section_by_name(".BTF").map(|s| s.size()).unwrap_or(0);
    if btf_bytes == 0 {
        return Err(KernelError::NoBtf);
    }
    Ok(VmlinuxInfo {
        btf_bytes,
        pvh_entry: has_pvh_note(bytes),
    })
}

/// Scans the ELF's note sections for the Xen PVH entry note.
fn has_pvh_note(bytes: &[u8]) -> bool {
    let Ok(elf) = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes) else {
        return false;
    };
    use object::read::elf::{FileHeader, SectionHeader};
    let endian = elf.endian();
    let Ok(sections) = elf.elf_header().sections(endian, bytes) else {
        return false;
    };
    sections.iter().any(|s| {
        let Ok(Some(mut notes)) = s.notes(endian, bytes) else {
            return false;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
        }
        false
    })
}

/// Checks that a kernel `config` enables sched_ext.
/// Whether the vmlinux was built with sched_ext, judged by its BTF names
/// (`struct sched_ext_ops` exists only with CONFIG_SCHED_CLASS_EXT): for
/// kernels whose config is not to be had.
pub fn btf_has_sched_ext(vmlinux: &[u8]) -> bool {
    const NAME: &[u8] = b"\0sched_ext_ops\0";
    vmlinux.windows(NAME.len()).any(|w| w == NAME)
}

pub fn check_config(config: &str) -> Result<(), KernelError> {
    if config
        .lines()
        .any(|l| l.trim() == "CONFIG_SCHED_CLASS_EXT=y")
    {
        Ok(())
    } else {
        Err(KernelError::NoSchedExt)
    }
}

// The tests build compressed images: they need the `fetch` half.
#[cfg(all(test, feature = "fetch"))]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal x86-64 ELF with a `.BTF` section, written with `object`.
    pub(crate) fn tiny_vmlinux(btf: &[u8]) -> Vec<u8> {
        use object::write;
        let mut obj = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = obj.add_section(vec![], b".text".to_vec(), object::SectionKind::Text);
        obj.append_section_data(text, &[0xc3; 64], 16);
        if !btf.is_empty() {
            let s = obj.add_section(vec![], b".BTF".to_vec(), object::SectionKind::Metadata);
            obj.append_section_data(s, btf, 4);
        }
        obj.write().expect("write tiny ELF")
    }

    /// Wraps a payload in a bzImage-shaped container (setup header only).
    pub(crate) fn tiny_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let pm_start = (usize::from(setup_sects) + 1) * 512;
        let rel = 0x40usize;
        let mut bz = vec![0u8; pm_start + rel];
        bz[SETUP_SECTS] = setup_sects;
        bz[HDRS_MAGIC_OFF..HDRS_MAGIC_OFF + 4].copy_from_slice(b"HdrS");
        bz[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        bz[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&(rel as u32).to_le_bytes());
        bz[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(payload);
        bz.extend_from_slice(&[0u8; 32]); // trailing setup data, as in real images
        bz
    }

    fn size_appended(mut c: Vec<u8>, raw: &[u8]) -> Vec<u8> {
        c.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        c
    }

    fn gzip(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(raw).expect("gzip");
        size_appended(e.finish().expect("gzip"), raw)
    }

    fn zstd(raw: &[u8]) -> Vec<u8> {
        let c = ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest);
        size_appended(c, raw)
    }

    fn xz(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut std::io::BufReader::new(raw), &mut out).expect("xz");
        size_appended(out, raw)
    }

    fn lz4(raw: &[u8]) -> Vec<u8> {
        let mut out = vec![0x02, 0x21, 0x4c, 0x18];
        for chunk in raw.chunks(8 << 20) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        size_appended(out, raw)
    }

    #[test]
    fn every_codec_round_trips_through_a_bzimage() {
        let elf = tiny_vmlinux(b"btf-bytes");
        for (name, compress) in [
            ("gzip", gzip as fn(&[u8]) -> Vec<u8>),
            ("zstd", zstd),
            ("xz", xz),
            ("lz4", lz4),
            ("none", |r: &[u8]| r.to_vec()),
        ] {
            let bz = tiny_bzimage(&compress(&elf));
            let out = extract_vmlinux(&bz).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out, elf, "{name}");
            let info = inspect_vmlinux(&out).expect("inspect");
            assert_eq!(info.btf_bytes, 9);
            assert!(!info.pvh_entry);
        }
    }

    #[test]
    fn truncated_payload_is_named() {
        let elf = tiny_vmlinux(b"btf");
        let bz = tiny_bzimage(&zstd(&elf));
        let cut = &bz[..bz.len() - 200];
        let err = extract_vmlinux(cut).expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn corrupt_payload_fails_without_panic() {
        let elf = tiny_vmlinux(b"btf");
        let mut payload = zstd(&elf);
        for b in payload.iter_mut().skip(8).take(64) {
            *b ^= 0x5a;
        }
        let err = extract_vmlinux(&tiny_bzimage(&payload)).expect_err("corrupt");
        assert!(matches!(
            err,
            KernelError::Decompress { .. } | KernelError::Corrupt { .. }
        ));
    }

    #[test]
    fn not_a_bzimage() {
        let err = extract_vmlinux(b"MZ this is a PE file, not a kernel").expect_err("no magic");
        assert!(err.to_string().contains("HdrS"), "{err}");
    }

    #[test]
    fn unsupported_codec_is_named() {
        let err = extract_vmlinux(&tiny_bzimage(b"BZh91AY&SY....")).expect_err("bzip2");
        assert!(err.to_string().contains("bzip2"), "{err}");
    }

    #[test]
    fn payload_decompressing_to_garbage_is_not_elf() {
        let err = extract_vmlinux(&tiny_bzimage(&gzip(b"not an elf at all"))).expect_err("garbage");
        assert!(err.to_string().contains("ELF"), "{err}");
    }

    #[test]
    fn vmlinux_without_btf_is_refused() {
        let err = inspect_vmlinux(&tiny_vmlinux(b"")).expect_err("no BTF");
        assert!(matches!(err, KernelError::NoBtf));
        assert!(err.to_string().contains("DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn config_without_sched_ext_is_refused() {
        assert!(check_config("CONFIG_FOO=y\nCONFIG_SCHED_CLASS_EXT=y\n").is_ok());
        let err = check_config("# CONFIG_SCHED_CLASS_EXT is not set\n").expect_err("no scx");
        assert!(err.to_string().contains("CONFIG_SCHED_CLASS_EXT"), "{err}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..600 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if len > 0x210 {
                bytes[HDRS_MAGIC_OFF..HDRS_MAGIC_OFF + 4].copy_from_slice(b"HdrS");
            }
            let _ = extract_vmlinux(&bytes);
            let _ = inspect_vmlinux(&bytes);
        }
    }
}
