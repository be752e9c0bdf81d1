//! Cache keys: SHA-256 of canonical bytes. Unlike std's `DefaultHasher`,
//! whose algorithm may change between Rust releases, the digest of the same
//! bytes is the same forever, so a cache survives a toolchain update. A cache
//! key, not a security boundary: the cache directory is the user's own.

use std::fmt;
use std::hash::Hasher;
use std::io::Read;

use sha2::{Digest, Sha256};

/// A SHA-256 digest naming a cache entry (or a file's content).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of `bytes`.
    pub fn of(bytes: &[u8]) -> Key {
        Key(Sha256::digest(bytes).into())
    }

    /// The key of everything `reader` yields, read in pieces.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<Key> {
        let mut h = KeyHasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(h.key())
    }

    /// The digest's bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in lower-case hex (64 characters).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// The first half of the digest in hex (32 characters): a shorter name
    /// where 128 bits are plenty.
    pub fn short_hex(&self) -> String {
        hex(&self.0[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.hex())
    }
}

/// Builds a [`Key`] from pieces: feed it bytes ([`KeyHasher::update`]) or
/// values through [`Hash`](std::hash::Hash) (what a type's `Hash` writes is
/// its canonical form here).
#[derive(Clone, Default)]
pub struct KeyHasher(Sha256);

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        KeyHasher(Sha256::new())
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The key of everything added.
    pub fn key(self) -> Key {
        Key(self.0.finalize().into())
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The first 8 bytes of the digest so far; keys take the whole digest
    /// ([`KeyHasher::key`]).
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn keys_are_sha256_in_hex() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let k = Key::of(b"abc");
        assert_eq!(
            k.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(k.short_hex(), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(k.to_string(), k.hex());
        assert_eq!(Key::of_reader(&b"abc"[..]).expect("read"), k);
        let mut h = KeyHasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.key(), k);
    }

    #[test]
    fn hashed_values_give_stable_keys() {
        let key = |v: &(&str, u32)| {
            let mut h = KeyHasher::new();
            v.hash(&mut h);
            h.key()
        };
        assert_eq!(key(&("busybox", 3)), key(&("busybox", 3)));
        assert_ne!(key(&("busybox", 3)), key(&("busybox", 4)));
    }
}
