//! The maps of a dump: data sections decoded variable by variable, arrays and hash maps
//! bounded to their first entries and counted, per-CPU maps per CPU.

use ktstr_btf::{Btf, Kind, TypeId};
use vm_memory::GuestMemory;

use super::{DumpLimits, EntryDump, MapDump, SectionDump, SectionError, VarDump, map_type_name};
use crate::bpf::{
    BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BpfMap,
};
use crate::error::{Error, Result};
use crate::kernel::GuestKernel;
use crate::walk::MAX_BUCKETS;

/// `BPF_MAP_TYPE_PERCPU_HASH`.
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
/// `BPF_MAP_TYPE_ARENA` (Linux 6.9+).
const BPF_MAP_TYPE_ARENA: u32 = 33;
/// A page of an arena.
const PAGE: u64 = 4096;
/// Longest value text kept per entry.
const MAX_TEXT: usize = 512;
/// Bytes of hash-map buckets read at once.
const BUCKET_CHUNK: u64 = 64 << 10;

/// A hash map walked with a bound: the first entries' addresses and the count of all.
pub(crate) struct HashWalk {
    /// Addresses of the first `limit` elements.
    pub(crate) first: Vec<u64>,
    /// Elements counted.
    pub(crate) total: u64,
    /// The count stopped at the step budget (`total` is a lower bound).
    pub(crate) cut: bool,
}

impl<M: GuestMemory + ?Sized> GuestKernel<'_, M> {
    /// A data-section map (an array of one element whose value type is a DATASEC) as its
    /// variables; `None` for every other map.
    pub(crate) fn section_dump(&self, map: &BpfMap) -> Option<SectionDump> {
        if map.map_type != BPF_MAP_TYPE_ARRAY || map.max_entries != 1 {
            return None;
        }
        let named_like_section =
            map.name.contains(".bss") || map.name.contains(".data") || map.name.contains(".rodata");
        if map.btf == 0 || map.btf_value_type_id == 0 {
            return named_like_section.then(|| SectionDump {
                map: map.name.clone(),
                map_id: map.id,
                section: map.name.clone(),
                vars: Err(SectionError::NoBtf),
            });
        }
        let bytes = match self.map_btf(map) {
            Ok(b) => b.bytes,
            Err(e) => {
                return Some(SectionDump {
                    map: map.name.clone(),
                    map_id: map.id,
                    section: map.name.clone(),
                    vars: Err(SectionError::MapBtf(e)),
                });
            }
        };
        let btf = match Btf::parse(&bytes) {
            Ok(b) => b,
            Err(e) => {
                return Some(SectionDump {
                    map: map.name.clone(),
                    map_id: map.id,
                    section: map.name.clone(),
                    vars: Err(SectionError::BtfParse(e)),
                });
            }
        };
        let sec = btf.ty(TypeId(map.btf_value_type_id)).ok()?;
        if sec.kind() != Kind::Datasec {
            return None;
        }
        let section = sec.name().to_string();
        let vars = self.section_vars(map, &btf, &section);
        Some(SectionDump {
            map: map.name.clone(),
            map_id: map.id,
            section,
            vars,
        })
    }

    fn section_vars(
        &self,
        map: &BpfMap,
        btf: &Btf<'_>,
        section: &str,
    ) -> std::result::Result<Vec<VarDump>, SectionError> {
        let value = self.array_value(map, 0).map_err(SectionError::Read)?;
        let vars = btf.datasec_vars(section).map_err(SectionError::Btf)?;
        let mut out = Vec::new();
        for v in vars {
            let start = v.offset as usize;
            let Some(bytes) = value.get(start..start.saturating_add(v.size as usize)) else {
                out.push(VarDump {
                    name: v.name.to_string(),
                    type_name: btf.type_name(v.ty).unwrap_or_default(),
                    value: format!(
                        "(at {}+{}, outside the {}-byte section)",
                        v.offset,
                        v.size,
                        value.len()
                    ),
                    int: None,
                });
                continue;
            };
            let text = btf
                .decode(v.ty, bytes)
                .map(|d| d.to_string())
                .unwrap_or_else(|e| format!("{} ({e})", hex(bytes)));
            let is_int = btf
                .resolve(v.ty)
                .is_ok_and(|t| matches!(t.kind(), Kind::Int | Kind::Enum | Kind::Enum64));
            out.push(VarDump {
                name: v.name.to_string(),
                type_name: btf.type_name(v.ty).unwrap_or_default(),
                value: clip(text),
                int: is_int.then(|| le_u64(bytes)).flatten(),
            });
        }
        Ok(out)
    }

    /// A map's header and first entries; errors become its note.
    pub(crate) fn map_dump(&self, map: &BpfMap, limits: &DumpLimits) -> MapDump {
        let mut d = MapDump {
            name: map.name.clone(),
            id: map.id,
            map_type: map.map_type,
            kind: map_type_name(map.map_type).to_string(),
            key_size: map.key_size,
            value_size: map.value_size,
            max_entries: map.max_entries,
            total: None,
            entries: Vec::new(),
            note: None,
        };
        let btf = if map.btf != 0 && map.btf_value_type_id != 0 {
            match self.map_btf(map) {
                Ok(b) => Some(b),
                Err(e) => {
                    d.note = Some(format!("the map's BTF could not be read ({e}); raw bytes"));
                    None
                }
            }
        } else {
            None
        };
        let parsed = btf.as_ref().and_then(|b| b.parse().ok());
        let fmt = |ty: u32, bytes: &[u8]| -> String {
            match &parsed {
                Some(p) if ty != 0 => p
                    .decode(TypeId(ty), bytes)
                    .map(|v| clip(v.to_string()))
                    .unwrap_or_else(|_| raw(bytes)),
                _ => raw(bytes),
            }
        };
        let key_ty = map.btf_key_type_id;
        let val_ty = map.btf_value_type_id;
        let result: Result<()> = match map.map_type {
            BPF_MAP_TYPE_ARRAY => (|| {
                d.total = Some(u64::from(map.max_entries));
                let n = (limits.entries as u32).min(map.max_entries);
                for i in 0..n {
                    let v = self.array_value(map, i)?;
                    d.entries.push(EntryDump {
                        key: i.to_string(),
                        cpu: None,
                        value: fmt(val_ty, &v),
                    });
                }
                Ok(())
            })(),
            BPF_MAP_TYPE_PERCPU_ARRAY => (|| {
                d.total = Some(u64::from(map.max_entries));
                let cpus = self.nr_cpu_ids()?.min(limits.cpus);
                let n = (limits.entries as u32).min(map.max_entries);
                for i in 0..n {
                    for cpu in 0..cpus {
                        let v = self.percpu_array_value(map, i, cpu)?;
                        d.entries.push(EntryDump {
                            key: i.to_string(),
                            cpu: Some(cpu),
                            value: fmt(val_ty, &v),
                        });
                    }
                }
                Ok(())
            })(),
            BPF_MAP_TYPE_HASH
            | BPF_MAP_TYPE_LRU_HASH
            | BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_LRU_PERCPU_HASH => (|| {
                let percpu = matches!(
                    map.map_type,
                    BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH
                );
                let walk = self.hash_walk(map, limits.entries, limits.count_steps)?;
                d.total = Some(walk.total);
                if walk.cut {
                    d.note = Some(format!(
                        "counting stopped after {} chain links: at least {} entries",
                        limits.count_steps, walk.total
                    ));
                }
                let key_off = self.btf().member("htab_elem", "key")?.byte_offset();
                let value_off = key_off + u64::from(map.key_size).next_multiple_of(8);
                let cpus = if percpu {
                    self.nr_cpu_ids()?.min(limits.cpus)
                } else {
                    0
                };
                for e in walk.first {
                    let k = self.read_vec(e + key_off, u64::from(map.key_size), "a map key")?;
                    let key = fmt(key_ty, &k);
                    if percpu {
                        let pptr = self.read_u64(e + value_off)?;
                        for cpu in 0..cpus {
                            let at = pptr.wrapping_add(self.per_cpu_offset(cpu)?);
                            let v = self.read_vec(at, u64::from(map.value_size), "a map value")?;
                            d.entries.push(EntryDump {
                                key: key.clone(),
                                cpu: Some(cpu),
                                value: fmt(val_ty, &v),
                            });
                        }
                    } else {
                        let v =
                            self.read_vec(e + value_off, u64::from(map.value_size), "a map value")?;
                        d.entries.push(EntryDump {
                            key,
                            cpu: None,
                            value: fmt(val_ty, &v),
                        });
                    }
                }
                self.check_map(map)
            })(),
            BPF_MAP_TYPE_ARENA => (|| {
                let pages = self.arena_pages(map)?;
                d.total = Some(pages);
                d.note = Some(format!(
                    "arena: {pages} of {} pages in use (mapped in the kernel's view); \
                     their contents are not read",
                    map.max_entries
                ));
                self.check_map(map)
            })(),
            other => {
                d.note = Some(format!(
                    "contents of {} maps are not read",
                    map_type_name(other)
                ));
                Ok(())
            }
        };
        if let Err(e) = result {
            let why = match e {
                Error::MapGone { .. } => format!("{e}: the entries shown may be torn"),
                e => format!("reading stopped: {e}"),
            };
            d.note = Some(match d.note.take() {
                Some(n) => format!("{n}; {why}"),
                None => why,
            });
        }
        d
    }

    /// Pages a BPF arena has in use: its kernel range (`arena->kern_vm`, 4 GiB plus guards)
    /// maps exactly the pages `bpf_arena_alloc_pages()` handed out and not freed.
    pub(crate) fn arena_pages(&self, map: &BpfMap) -> Result<u64> {
        let arena = self
            .value(map.addr, "bpf_map")?
            .container_of("bpf_arena", "map")?;
        let vm = arena.field("kern_vm")?.deref()?;
        let start = vm.field("addr")?.u64()?;
        let size = vm.field("size")?.u64()?;
        // 4 GiB of arena and its guard; anything much larger is not an arena's.
        if size > 8 << 30 || start.checked_add(size).is_none() {
            return Err(Error::Corrupt {
                what: "struct bpf_arena",
                addr: arena.addr(),
                why: format!("kern_vm of {size} bytes at {start:#x}"),
            });
        }
        Ok(self.mapped_bytes(start, start + size)? / PAGE)
    }

    /// Walks a hash map's buckets: the first `limit` elements' addresses, and the count of
    /// all elements, following at most `steps` chain links.
    pub(crate) fn hash_walk(&self, map: &BpfMap, limit: usize, steps: u64) -> Result<HashWalk> {
        let htab = self.value(map.addr, "bpf_htab")?;
        let n = htab.field("n_buckets")?.u64()?;
        if !n.is_power_of_two() || n > MAX_BUCKETS {
            return Err(Error::Corrupt {
                what: "struct bpf_htab",
                addr: map.addr,
                why: format!("{n} buckets"),
            });
        }
        let buckets = htab.field("buckets")?.deref()?.addr();
        let btf = self.btf();
        let bucket_size = btf.size_of(btf.composite("bucket")?)?.max(1);
        let first_off = btf.member("bucket", "head.first")?.byte_offset();
        let next_off = btf.member("htab_elem", "hash_node.next")?.byte_offset();
        let per_chunk = (BUCKET_CHUNK / bucket_size).max(1);
        let mut walk = HashWalk {
            first: Vec::new(),
            total: 0,
            cut: false,
        };
        let mut left = steps;
        let mut start = 0;
        while start < n {
            let count = per_chunk.min(n - start);
            let raw = self.read_vec(
                buckets.wrapping_add(start * bucket_size),
                count * bucket_size,
                "hash map buckets",
            )?;
            for i in 0..count {
                let at = (i * bucket_size + first_off) as usize;
                let mut p = le_u64(raw.get(at..at + 8).unwrap_or(&[1])).unwrap_or(1);
                // A chain ends at an odd "nulls" marker.
                while p != 0 && p & 1 == 0 {
                    if left == 0 {
                        walk.cut = true;
                        return Ok(walk);
                    }
                    left -= 1;
                    walk.total += 1;
                    if walk.first.len() < limit {
                        walk.first.push(p);
                    }
                    p = self.read_u64(p.wrapping_add(next_off))?;
                }
            }
            start += count;
        }
        Ok(walk)
    }
}

/// The bytes as a little-endian integer, for 1 to 8 bytes.
fn le_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut b = [0u8; 8];
    b.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(u64::from_le_bytes(b))
}

/// Bytes without a type: an integer when they fit one, else hex.
fn raw(bytes: &[u8]) -> String {
    match bytes.len() {
        1 | 2 | 4 | 8 => le_u64(bytes).map_or_else(|| hex(bytes), |v| v.to_string()),
        _ => hex(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(MAX_TEXT / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > MAX_TEXT / 2 {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let end = (0..=MAX_TEXT)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        let total = s.len();
        s.truncate(end);
        s.push_str(&format!("... ({total} chars)"));
    }
    s
}
