//! LZ4 in the kernel's "legacy" format, the one `lib/decompress_unlz4.c` reads:
//! the little-endian magic `0x184C2102`, then blocks of at most 8 MiB of input,
//! each a little-endian `u32` compressed length and a raw LZ4 block.
//!
//! The format has no end marker: the kernel's unpacker feeds the decompressor
//! the rest of the initrd, and a chunk length that equals the magic starts a
//! new stream within the same one. So an initrd may hold a compressed base
//! followed by a compressed overlay (the second stream's magic is skipped),
//! but never a compressed part followed by an uncompressed one.

use std::io::{self, Write};

const MAGIC: u32 = 0x184C_2102;
/// `LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE` in the kernel's unlz4.
const CHUNK: usize = 8 << 20;

/// A `Write` adapter producing one legacy LZ4 stream; call [`Lz4Legacy::finish`].
#[derive(Debug)]
pub(crate) struct Lz4Legacy<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Lz4Legacy<W> {
    pub fn new(mut inner: W) -> io::Result<Self> {
        inner.write_all(&MAGIC.to_le_bytes())?;
        Ok(Self {
            inner,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = lz4_flex::block::compress(&self.buf);
        let len =
            u32::try_from(block.len()).map_err(|_| io::Error::other("LZ4 block too large"))?;
        self.inner.write_all(&len.to_le_bytes())?;
        self.inner.write_all(&block)?;
        self.buf.clear();
        Ok(())
    }

    /// Write the last block and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Lz4Legacy<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are cut at CHUNK only: flushing early would change the output.
        self.inner.flush()
    }
}

/// Compress `data` into one legacy LZ4 stream.
pub(crate) fn lz4_legacy(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut w = Lz4Legacy::new(Vec::new())?;
    w.write_all(data)?;
    w.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decode like the kernel: magic, then (len, block) until the input ends;
    /// a length equal to the magic starts a new stream.
    pub(crate) fn unlz4(mut input: &[u8]) -> Vec<u8> {
        let word = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        assert_eq!(word(input), MAGIC);
        input = &input[4..];
        let mut out = Vec::new();
        while !input.is_empty() {
            let len = word(input);
            input = &input[4..];
            if len == MAGIC {
                continue;
            }
            let (block, rest) = input.split_at(len as usize);
            out.extend(lz4_flex::block::decompress(block, CHUNK).expect("valid block"));
            input = rest;
        }
        out
    }

    #[test]
    fn round_trips_across_blocks_and_concatenation() {
        let data: Vec<u8> = (0..CHUNK + 12345).map(|i| (i * 7 % 251) as u8).collect();
        let mut both = lz4_legacy(&data).expect("compress");
        both.extend(lz4_legacy(b"tail").expect("compress"));
        let mut want = data.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(unlz4(&both), want);
    }
}
