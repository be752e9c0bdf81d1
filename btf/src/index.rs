//! The name index, built once at parse time.
//!
//! A hash table in compressed-row form: named types are counted into buckets by the hash of
//! their name, then placed bucket by bucket (a counting sort). Building is two linear passes
//! with no re-hashing; a lookup hashes the name once and compares the few entries of one bucket.
//! Entries keep id order inside a bucket, so the first match is the lowest id. Many types with
//! one name only make that bucket long: work stays linear, never quadratic.

use alloc::vec;
use alloc::vec::Vec;

use zerocopy::FromBytes;

use crate::raw::TypeHeader;
use crate::types::{Strings, TypeId};

#[derive(Debug, Default)]
pub(crate) struct NameIndex {
    shift: u32,
    /// `starts[b]..starts[b + 1]` are bucket `b`'s entries.
    starts: Vec<u32>,
    /// (name offset, type id) of each named type.
    entries: Vec<(u32, u32)>,
}

/// FNV-1a over the name's bytes, stopping at the NUL.
#[inline]
fn hash(bytes: impl Iterator<Item = u8>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Kinds whose "name" is not an identifier (tags carry attribute values) are not indexed.
fn indexed(info: u32) -> bool {
    let kind = (info >> 24) & 0x1f;
    kind != 17 && kind != 18
}

impl NameIndex {
    pub(crate) fn build(types: &[u8], offsets: &[u32], strings: Strings<'_>) -> NameIndex {
        let mut named: Vec<(u32, u32)> = Vec::with_capacity(offsets.len());
        for (i, &off) in offsets.iter().enumerate() {
            let Some(Ok((h, _))) = types.get(off as usize..).map(TypeHeader::ref_from_prefix)
            else {
                continue;
            };
            let name_off = h.name_off.get();
            if name_off != 0 && indexed(h.info.get()) {
                named.push((name_off, i as u32));
            }
        }
        // Power-of-two bucket count, about one entry per bucket.
        let bits = usize::BITS - named.len().max(1).leading_zeros();
        let shift = 32 - bits.min(31);
        let nbuckets = 1usize << (32 - shift);
        let mut hashes = Vec::with_capacity(named.len());
        let mut starts = vec![0u32; nbuckets + 1];
        for &(name_off, _) in &named {
            let b = bucket(hash(strings.bytes(name_off).iter().copied()), shift);
            hashes.push(b as u32);
            if let Some(c) = starts.get_mut(b + 1) {
                *c += 1;
            }
        }
        for b in 0..nbuckets {
            let prev = starts.get(b).copied().unwrap_or(0);
            if let Some(c) = starts.get_mut(b + 1) {
                *c += prev;
            }
        }
        let mut fill: Vec<u32> = starts.clone();
        let mut entries = vec![(0u32, 0u32); named.len()];
        for (&(name_off, local), &b) in named.iter().zip(&hashes) {
            if let Some(slot) = fill.get_mut(b as usize) {
                if let Some(e) = entries.get_mut(*slot as usize) {
                    *e = (name_off, local);
                }
                *slot += 1;
            }
        }
        NameIndex {
            shift,
            starts,
            entries,
        }
    }

    /// Ids of the types named `name`, in id order.
    pub(crate) fn lookup<'s>(
        &'s self,
        strings: Strings<'s>,
        start_id: u32,
        name: &'s str,
    ) -> impl Iterator<Item = TypeId> + 's {
        let entries: &[(u32, u32)] = if self.starts.is_empty() || name.is_empty() {
            &[]
        } else {
            let b = bucket(hash(name.bytes()), self.shift);
            let lo = self.starts.get(b).copied().unwrap_or(0) as usize;
            let hi = self.starts.get(b + 1).copied().unwrap_or(0) as usize;
            self.entries.get(lo..hi).unwrap_or(&[])
        };
        entries
            .iter()
            .filter(move |&&(name_off, _)| strings.eq(name_off, name.as_bytes()))
            .map(move |&(_, local)| TypeId(start_id + local))
    }
}

#[inline]
fn bucket(h: u32, shift: u32) -> usize {
    // Fibonacci hashing: the top bits of the product mix all bits of the hash.
    (h.wrapping_mul(0x9e37_79b9) >> shift) as usize
}
