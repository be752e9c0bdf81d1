//! The cpio `newc` format: a deterministic writer and a bounds-checked reader.
//!
//! The layout is the one the kernel's initramfs unpacker reads
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`): a 110-byte
//! ASCII header of thirteen 8-digit hex fields after the magic `070701`, the
//! NUL-terminated name padded so the data starts on a 4-byte boundary, the data
//! padded to 4 bytes, and a last entry named `TRAILER!!!`. Archives may be
//! concatenated, with zero bytes between them, as long as each one starts on a
//! 4-byte boundary; every archive this module writes has a length that is a
//! multiple of 4, so appending another one is always valid.
//!
//! Determinism: entries are kept sorted by path (so a directory always comes
//! before what it holds), owners are 0, times are 0, inode numbers are the
//! entry's position. Nothing from the host's file system leaks in but file
//! contents and the permission bits the caller chose.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{InitramfsError, Result, io};

/// The `newc` magic ("new ASCII" without checksums).
const MAGIC: [u8; 6] = *b"070701";
/// The name of the last entry of an archive.
const TRAILER: &str = "TRAILER!!!";
/// File type bits of `st_mode` (`include/uapi/linux/stat.h`).
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// `PATH_MAX` (`include/uapi/linux/limits.h`): the kernel's unpacker refuses longer names.
const PATH_MAX: usize = 4096;

/// One `newc` header as it sits in the archive: every field is 8 ASCII hex digits.
#[derive(IntoBytes, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    magic: [u8; 6],
    ino: [u8; 8],
    mode: [u8; 8],
    uid: [u8; 8],
    gid: [u8; 8],
    nlink: [u8; 8],
    mtime: [u8; 8],
    filesize: [u8; 8],
    devmajor: [u8; 8],
    devminor: [u8; 8],
    rdevmajor: [u8; 8],
    rdevminor: [u8; 8],
    namesize: [u8; 8],
    check: [u8; 8],
}

const HEADER_LEN: usize = size_of::<RawHeader>();
const _: () = assert!(HEADER_LEN == 110);

fn hex8(v: u32) -> [u8; 8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn unhex8(field: &[u8; 8]) -> Option<u32> {
    field.iter().try_fold(0u32, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d)
    })
}

/// Bytes of zero padding that bring `len` to a multiple of 4.
fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// Where a regular file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Contents {
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
    /// A host file, read (following symlinks) when the archive is written.
    Host(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, contents: Contents },
    Symlink { target: String },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir { mode } => format!("directory {mode:o}"),
            Node::File {
                mode,
                contents: Contents::Bytes(b),
            } => {
                format!("file {mode:o} of {} bytes", b.len())
            }
            Node::File {
                mode,
                contents: Contents::Host(p),
            } => {
                format!("file {mode:o} from {}", p.display())
            }
            Node::Symlink { target } => format!("symlink to {target}"),
        }
    }
}

/// An archive being assembled: a sorted tree of entries, written on demand.
///
/// Paths are absolute guest paths (`/lib/x86_64-linux-gnu/libc.so.6`); the
/// leading `/` is optional. Missing parent directories are added with mode
/// `0755`. Adding the same path twice is fine when both entries are equal and an
/// error otherwise, so two binaries that share a library do not fight over it.
///
/// ```
/// use ktstr_initramfs::Archive;
/// let mut a = Archive::new();
/// a.add_bytes("/etc/motd", 0o644, b"hello\n".to_vec())?;
/// a.add_symlink("/bin/sh", "busybox")?;
/// let bytes = a.to_vec()?;
/// assert_eq!(&bytes[..6], b"070701");
/// assert_eq!(bytes.len() % 4, 0);
/// # Ok::<(), ktstr_initramfs::InitramfsError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
}

/// Normalise a guest path to its archive name: no leading `/`, no empty or `.`
/// components; `..` and NUL are refused.
pub(crate) fn archive_name(path: &str) -> Result<String> {
    let bad = |reason| InitramfsError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(bad("`..` components are not allowed")),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("it names the root directory"));
    }
    if out.len() >= PATH_MAX {
        return Err(bad("it is longer than PATH_MAX"));
    }
    Ok(out)
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries, implicit parent directories included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True when `path` is in the archive.
    pub fn contains(&self, path: &str) -> bool {
        archive_name(path).is_ok_and(|n| self.nodes.contains_key(&n))
    }

    /// Add a directory with permission bits `mode` (e.g. `0o755`).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let name = archive_name(path)?;
        self.parents(&name)?;
        let node = Node::Dir {
            mode: mode & 0o7777,
        };
        match self.nodes.get_mut(&name) {
            // An explicit mode wins over the implicit 0755 of a parent.
            Some(Node::Dir { mode: m }) => {
                *m = mode & 0o7777;
                Ok(())
            }
            Some(other) => Err(conflict(&name, other, &node)),
            None => {
                self.nodes.insert(name, node);
                Ok(())
            }
        }
    }

    /// Add a regular file holding `bytes`.
    pub fn add_bytes(&mut self, path: &str, mode: u32, bytes: impl Into<Arc<[u8]>>) -> Result<()> {
        let contents = Contents::Bytes(bytes.into());
        self.insert(
            path,
            Node::File {
                mode: mode & 0o7777,
                contents,
            },
        )
    }

    /// Add a regular file whose contents are read from `host` when the archive
    /// is written (symlinks followed).
    pub fn add_file(&mut self, path: &str, mode: u32, host: impl Into<PathBuf>) -> Result<()> {
        let contents = Contents::Host(host.into());
        self.insert(
            path,
            Node::File {
                mode: mode & 0o7777,
                contents,
            },
        )
    }

    /// Add a symbolic link pointing at `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() || target.contains('\0') {
            return Err(InitramfsError::InvalidPath {
                path: target.to_owned(),
                reason: "a symlink target must be non-empty and free of NUL",
            });
        }
        self.insert(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Every host file the archive will read, with its archive path.
    pub fn host_files(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.nodes.iter().filter_map(|(name, node)| match node {
            Node::File {
                contents: Contents::Host(p),
                ..
            } => Some((name.as_str(), p.as_path())),
            _ => None,
        })
    }

    fn parents(&mut self, name: &str) -> Result<()> {
        let mut end = 0;
        while let Some(i) = name[end..].find('/') {
            let parent = &name[..end + i];
            match self.nodes.get(parent) {
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(conflict(parent, other, &Node::Dir { mode: 0o755 }));
                }
                None => {
                    self.nodes
                        .insert(parent.to_owned(), Node::Dir { mode: 0o755 });
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let name = archive_name(path)?;
        self.parents(&name)?;
        match self.nodes.get(&name) {
            Some(existing) if *existing == node => Ok(()),
            Some(existing) => Err(conflict(&name, existing, &node)),
            None => {
                self.nodes.insert(name, node);
                Ok(())
            }
        }
    }

    /// Write the archive, trailer included, and return the number of bytes written.
    ///
    /// Host files are copied with `std::io::copy`, which uses `copy_file_range`
    /// when `w` is a `File` (or a `BufWriter<File>`).
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<u64> {
        self.write_layout(w).map(|(n, _)| n)
    }

    /// Write the archive; also return where each host file's data landed.
    pub(crate) fn write_layout<W: Write>(&self, w: &mut W) -> Result<(u64, Vec<Extent>)> {
        let mut written = 0u64;
        let mut extents = Vec::new();
        for (index, (name, node)) in self.nodes.iter().enumerate() {
            // Inode numbers only need to be distinct within the archive.
            let ino = u32::try_from(index + 1).map_err(|_| InitramfsError::TooLarge {
                path: name.clone(),
                size: index as u64,
            })?;
            written += match node {
                Node::Dir { mode } => write_entry(w, ino, S_IFDIR | mode, 2, name, &[])?,
                Node::Symlink { target } => {
                    write_entry(w, ino, S_IFLNK | 0o777, 1, name, target.as_bytes())?
                }
                Node::File {
                    mode,
                    contents: Contents::Bytes(b),
                } => write_entry(w, ino, S_IFREG | mode, 1, name, b)?,
                Node::File {
                    mode,
                    contents: Contents::Host(p),
                } => {
                    let (n, data_at, len) = write_host_file(w, ino, S_IFREG | mode, name, p)?;
                    extents.push(Extent {
                        host: p.clone(),
                        offset: written + data_at,
                        len,
                    });
                    n
                }
            };
        }
        written += write_trailer(w)?;
        Ok((written, extents))
    }

    /// The archive as bytes (for small archives: host files are read into memory).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }
}

fn conflict(name: &str, first: &Node, second: &Node) -> InitramfsError {
    InitramfsError::Conflict {
        path: format!("/{name}"),
        first: first.describe(),
        second: second.describe(),
    }
}

fn header(ino: u32, mode: u32, nlink: u32, filesize: u32, namesize: u32) -> RawHeader {
    let zero = hex8(0);
    RawHeader {
        magic: MAGIC,
        ino: hex8(ino),
        mode: hex8(mode),
        uid: zero,
        gid: zero,
        nlink: hex8(nlink),
        mtime: zero,
        filesize: hex8(filesize),
        devmajor: zero,
        devminor: zero,
        rdevmajor: zero,
        rdevminor: zero,
        namesize: hex8(namesize),
        check: zero,
    }
}

/// Write a header and the padded name; returns the bytes written.
fn write_head<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    size: u64,
) -> Result<u64> {
    let filesize = u32::try_from(size).map_err(|_| InitramfsError::TooLarge {
        path: format!("/{name}"),
        size,
    })?;
    // Name lengths are bounded by PATH_MAX in `archive_name`.
    let namesize = u32::try_from(name.len() + 1).expect("names are shorter than PATH_MAX");
    let h = header(ino, mode, nlink, filesize, namesize);
    let mut buf = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    buf.extend_from_slice(h.as_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    buf.resize(buf.len() + pad4(buf.len() as u64), 0);
    w.write_all(&buf).map_err(write_err)?;
    Ok(buf.len() as u64)
}

fn write_err(e: io::Error) -> InitramfsError {
    InitramfsError::Io {
        path: PathBuf::from("<archive>"),
        op: "write",
        source: e,
    }
}

fn write_pad<W: Write>(w: &mut W, len: u64) -> Result<u64> {
    let n = pad4(len);
    w.write_all(&[0u8; 3][..n]).map_err(write_err)?;
    Ok(n as u64)
}

fn write_entry<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<u64> {
    let mut n = write_head(w, ino, mode, nlink, name, data.len() as u64)?;
    w.write_all(data).map_err(write_err)?;
    n += data.len() as u64;
    n += write_pad(w, data.len() as u64)?;
    Ok(n)
}

/// Where a host file's data sits in a written archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extent {
    pub host: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// Returns (bytes written, offset of the data within them, data length).
fn write_host_file<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    name: &str,
    host: &Path,
) -> Result<(u64, u64, u64)> {
    let file = File::open(host).map_err(io(host, "open"))?;
    let size = file.metadata().map_err(io(host, "stat"))?.len();
    let head = write_head(w, ino, mode, 1, name, size)?;
    let copied = io::copy(&mut (&file).take(size), w).map_err(io(host, "copy"))?;
    if copied != size {
        return Err(InitramfsError::Changed {
            path: host.to_owned(),
            expected: size,
        });
    }
    let pad = write_pad(w, size)?;
    Ok((head + size + pad, head, size))
}

fn write_trailer<W: Write>(w: &mut W) -> Result<u64> {
    write_head(w, 0, 0, 1, TRAILER, 0)
}

/// The kind of an entry read back from an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link; the data is its target.
    Symlink,
    /// Anything else (devices, FIFOs, sockets).
    Other,
}

/// One entry of a parsed archive, borrowing from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The name as stored (no leading `/` in archives this crate writes).
    pub name: &'a [u8],
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// File contents, or a symlink's target.
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// The entry's kind, from the type bits of its mode.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// Read every entry of one or more concatenated `newc` archives, as the
/// kernel does: zero bytes between archives are skipped, trailers are not
/// returned. Never panics on malformed input.
pub fn parse(buf: &[u8]) -> Result<Vec<Entry<'_>>> {
    let bad = |offset, reason| InitramfsError::Malformed { offset, reason };
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        if buf[pos] == 0 {
            pos += 1;
            continue;
        }
        if !pos.is_multiple_of(4) {
            return Err(bad(pos, "an archive does not start on a 4-byte boundary"));
        }
        let at = pos;
        let rest = &buf[at..];
        let (h, _) = RawHeader::ref_from_prefix(rest).map_err(|_| bad(pos, "truncated header"))?;
        if h.magic != MAGIC {
            return Err(bad(pos, "bad magic (only newc without checksums is read)"));
        }
        let field =
            |f: &[u8; 8]| unhex8(f).ok_or_else(|| bad(at, "non-hex digit in a header field"));
        let mode = field(&h.mode)?;
        let namesize = field(&h.namesize)? as usize;
        let filesize = field(&h.filesize)? as usize;
        if namesize == 0 {
            return Err(bad(pos, "empty name"));
        }
        let name_end = HEADER_LEN
            .checked_add(namesize)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| bad(pos, "name runs past the end"))?;
        let name = &rest[HEADER_LEN..name_end];
        let Some((&0, name)) = name.split_last() else {
            return Err(bad(pos, "name is not NUL-terminated"));
        };
        let data_start = name_end + pad4(name_end as u64);
        let data_end = data_start
            .checked_add(filesize)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| bad(pos, "data runs past the end"))?;
        let data = &rest[data_start..data_end];
        let next = data_end + pad4(data_end as u64);
        pos += next.min(rest.len());
        if name == TRAILER.as_bytes() {
            continue;
        }
        out.push(Entry {
            name,
            mode,
            uid: field(&h.uid)?,
            gid: field(&h.gid)?,
            nlink: field(&h.nlink)?,
            mtime: field(&h.mtime)?,
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_is_ascii_hex() {
        let mut a = Archive::new();
        a.add_bytes("/a", 0o644, b"xyz".to_vec()).expect("add");
        let bytes = a.to_vec().expect("write");
        // Header, "a\0" padded to 112, 3 data bytes padded to 116, trailer 124.
        assert_eq!(bytes.len(), 116 + 124);
        assert_eq!(&bytes[..14], b"07070100000001");
        assert_eq!(&bytes[14..22], b"000081a4");
        assert_eq!(&bytes[112..115], b"xyz");
        assert!(bytes[116..].starts_with(b"070701"));
    }

    #[test]
    fn parents_are_added_and_sorted_first() {
        let mut a = Archive::new();
        a.add_bytes("/usr/lib/x/libz.so", 0o755, vec![1])
            .expect("add");
        a.add_symlink("lib", "usr/lib").expect("add");
        a.add_dir("/usr", 0o700).expect("add");
        let bytes = a.to_vec().expect("write");
        let names: Vec<_> = parse(&bytes)
            .expect("parse")
            .iter()
            .map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.mode))
            .collect();
        assert_eq!(
            names,
            [
                ("lib".to_owned(), 0o120777),
                ("usr".to_owned(), 0o40700),
                ("usr/lib".to_owned(), 0o40755),
                ("usr/lib/x".to_owned(), 0o40755),
                ("usr/lib/x/libz.so".to_owned(), 0o100755),
            ]
        );
    }

    #[test]
    fn conflicts_are_errors_and_equal_duplicates_are_not() {
        let mut a = Archive::new();
        a.add_bytes("/a/b", 0o644, vec![1]).expect("add");
        a.add_bytes("a//b", 0o644, vec![1])
            .expect("same entry again");
        assert!(matches!(
            a.add_bytes("/a/b", 0o644, vec![2]),
            Err(InitramfsError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_bytes("/a/b/c", 0o644, vec![2]),
            Err(InitramfsError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_symlink("/a", "x"),
            Err(InitramfsError::Conflict { .. })
        ));
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["", "/", "/a/../b", "a\0b", "/./"] {
            assert!(archive_name(p).is_err(), "{p:?}");
        }
        assert_eq!(archive_name("//a/./b/").expect("valid"), "a/b");
    }

    #[test]
    fn host_file_is_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"contents").expect("write");
        let mut a = Archive::new();
        a.add_file("/bin/f", 0o755, &p).expect("add");
        let mut out = File::create(dir.path().join("out.cpio")).expect("create");
        let n = a.write_to(&mut out).expect("write");
        let bytes = std::fs::read(dir.path().join("out.cpio")).expect("read");
        assert_eq!(n, bytes.len() as u64);
        let entries = parse(&bytes).expect("parse");
        assert_eq!(entries[1].data, b"contents");
    }

    #[test]
    fn concatenated_archives_parse_like_the_kernel() {
        let mut a = Archive::new();
        a.add_bytes("/a", 0o644, vec![1, 2, 3]).expect("add");
        let mut b = Archive::new();
        b.add_bytes("/b", 0o600, vec![4]).expect("add");
        let mut bytes = a.to_vec().expect("write");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend(b.to_vec().expect("write"));
        let names: Vec<_> = parse(&bytes)
            .expect("parse")
            .iter()
            .map(|e| e.name.to_vec())
            .collect();
        assert_eq!(names, [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse(b"070701").is_err());
        assert!(parse(b"hello").is_err());
        let mut bytes = Archive::new().to_vec().expect("write");
        bytes[20] = b'g';
        assert!(parse(&bytes).is_err());
    }

    fn arb_tree() -> impl Strategy<Value = Vec<(String, u8, u32, Vec<u8>)>> {
        let comp = "[a-z0-9_.-]{1,6}".prop_filter("no dot names", |s| s != "." && s != "..");
        let path = proptest::collection::vec(comp, 1..4).prop_map(|c| c.join("/"));
        let entry = (
            path,
            0u8..3,
            0u32..0o7777,
            proptest::collection::vec(any::<u8>(), 0..40),
        );
        proptest::collection::vec(entry, 0..12)
    }

    fn build(entries: &[(String, u8, u32, Vec<u8>)]) -> Archive {
        let mut a = Archive::new();
        for (path, kind, mode, data) in entries {
            // Conflicting entries are simply rejected; what was accepted must round-trip.
            let _ = match kind {
                0 => a.add_dir(path, *mode),
                1 => a.add_bytes(path, *mode, data.clone()),
                _ => a.add_symlink(path, "target"),
            };
        }
        a
    }

    proptest! {
        #[test]
        fn round_trip(entries in arb_tree()) {
            let a = build(&entries);
            let bytes = a.to_vec().expect("write");
            prop_assert_eq!(bytes.len() % 4, 0);
            let parsed = parse(&bytes).expect("parse");
            prop_assert_eq!(parsed.len(), a.len());
            for (e, (name, node)) in parsed.iter().zip(a.nodes.iter()) {
                prop_assert_eq!(e.name, name.as_bytes());
                prop_assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0));
                match node {
                    Node::Dir { mode } => prop_assert_eq!(e.mode, S_IFDIR | mode),
                    Node::File { mode, contents: Contents::Bytes(b) } => {
                        prop_assert_eq!(e.mode, S_IFREG | mode);
                        prop_assert_eq!(e.data, &b[..]);
                    }
                    Node::Symlink { target } => prop_assert_eq!(e.data, target.as_bytes()),
                    Node::File { .. } => prop_assert!(false, "no host files here"),
                }
            }
        }

        #[test]
        fn insertion_order_does_not_matter(entries in arb_tree()) {
            // Only conflict-free sets are order independent: keep the first of each path.
            let mut seen = std::collections::BTreeSet::new();
            let entries: Vec<_> = entries.into_iter().filter(|e| seen.insert(e.0.clone())).collect();
            let forward = build(&entries).to_vec().expect("write");
            let reversed: Vec<_> = entries.iter().rev().cloned().collect();
            let a = build(&reversed);
            let b = build(&entries);
            if a.nodes == b.nodes {
                prop_assert_eq!(forward, a.to_vec().expect("write"));
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }
    }
}
