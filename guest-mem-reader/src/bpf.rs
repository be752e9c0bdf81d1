//! BPF maps of the guest: found by walking `map_idr`, read by name, their values typed by the
//! program's own BTF (the `struct btf` the map references, read out of guest memory). A
//! scheduler's global resolves by name through its `.bss`/`.data`/`.rodata` maps.

use std::collections::HashMap;

use ktstr_btf::{Btf, DatasecVar, Kind, TypeId};
use vm_memory::GuestMemory;

use crate::error::{Error, Result};
use crate::kernel::GuestKernel;
use crate::walk::{self, MAX_BUCKETS, MAX_ENTRIES, MAX_STEPS};

/// `BPF_MAP_TYPE_HASH` (`include/uapi/linux/bpf.h`).
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// Largest program BTF read from the guest.
const MAX_BTF: u64 = 16 << 20;
/// Bytes of hash-map buckets read at once.
const BUCKET_CHUNK: u64 = 64 << 10;
/// Magic of raw BTF (`BTF_MAGIC`).
const BTF_MAGIC: [u8; 2] = [0x9f, 0xeb];

/// A loaded BPF map, as read from its `struct bpf_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfMap {
    /// Guest address of the `struct bpf_map` (the start of `bpf_array`/`bpf_htab`).
    pub addr: u64,
    /// Map id (its index in `map_idr`).
    pub id: u32,
    /// Name, at most 15 bytes (libbpf names a data section map `<obj prefix>.bss`).
    pub name: String,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Entries.
    pub max_entries: u32,
    /// Guest address of the map's `struct btf` (0: none).
    pub btf: u64,
    /// BTF type id of the key in the map's BTF (0: none).
    pub btf_key_type_id: u32,
    /// BTF type id of the value (a DATASEC for `.bss`/`.data`/`.rodata` maps).
    pub btf_value_type_id: u32,
}

/// A map's BTF, read out of guest memory, and the key and value types in it.
#[derive(Debug, Clone)]
pub struct MapBtf {
    /// The raw BTF (header, types, strings).
    pub bytes: Vec<u8>,
    /// Key type id (0: none).
    pub key: TypeId,
    /// Value type id.
    pub value: TypeId,
}

impl MapBtf {
    /// Parse the BTF.
    pub fn parse(&self) -> Result<Btf<'_>> {
        Ok(Btf::parse(&self.bytes)?)
    }

    /// A value of the map printed through its BTF type (`{pid=101, weight=100}`).
    pub fn format_value(&self, value: &[u8]) -> Result<String> {
        Ok(self.parse()?.decode(self.value, value)?.to_string())
    }

    /// A key printed through its BTF type.
    pub fn format_key(&self, key: &[u8]) -> Result<String> {
        Ok(self.parse()?.decode(self.key, key)?.to_string())
    }
}

/// A global variable of a BPF program, read from its data-section map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfVar {
    /// The variable's name.
    pub name: String,
    /// The map holding it (`ktstr_fi.bss`).
    pub map: String,
    /// The section (`.bss`, `.data`, `.rodata`, ...).
    pub section: String,
    /// Byte offset in the section.
    pub offset: u32,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its C type (`u64`, `char [16]`).
    pub type_name: String,
    /// Its value, decoded through the program's BTF.
    pub text: String,
}

impl BpfVar {
    /// The value as a little-endian unsigned integer, for variables of 1 to 8 bytes.
    pub fn as_u64(&self) -> Option<u64> {
        if self.bytes.is_empty() || self.bytes.len() > 8 {
            return None;
        }
        let mut b = [0u8; 8];
        b.get_mut(..self.bytes.len())?.copy_from_slice(&self.bytes);
        Some(u64::from_le_bytes(b))
    }
}

impl<M: GuestMemory + ?Sized> GuestKernel<'_, M> {
    /// Every loaded BPF map, in id order. An idr entry whose map does not carry that id (a
    /// map freed while the walk ran) is left out.
    pub fn bpf_maps(&self) -> Result<Vec<BpfMap>> {
        let idr = self.global("map_idr", "idr")?;
        let base = idr
            .get("idr_base")?
            .map(|v| v.u64())
            .transpose()?
            .unwrap_or(0);
        let mut out = Vec::new();
        for (index, p) in walk::xarray_entries(idr.field("idr_rt")?)? {
            let m = self.read_map(p)?;
            if u64::from(m.id) == index.wrapping_add(base) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The map named `name`.
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let stats = kernel.bpf_map("stats")?;
    /// assert_eq!(kernel.array_value(&stats, 2)?, 3u64.to_le_bytes());
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn bpf_map(&self, name: &str) -> Result<BpfMap> {
        self.bpf_maps()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::NoSuchMap(name.to_string()))
    }

    /// Read the `struct bpf_map` at `addr`.
    pub fn read_map(&self, addr: u64) -> Result<BpfMap> {
        let m = self.value(addr, "bpf_map")?;
        let u = |path: &str| -> Result<u32> { Ok(m.field(path)?.u64()? as u32) };
        Ok(BpfMap {
            addr,
            id: u("id")?,
            name: m.field("name")?.string()?,
            map_type: u("map_type")?,
            key_size: u("key_size")?,
            value_size: u("value_size")?,
            max_entries: u("max_entries")?,
            btf: m.field("btf")?.u64()?,
            btf_key_type_id: u("btf_key_type_id")?,
            btf_value_type_id: u("btf_value_type_id")?,
        })
    }

    /// Check that `map` is still loaded as it was found (same id and name at its address):
    /// a map freed or reused since is [`Error::MapGone`].
    pub fn check_map(&self, map: &BpfMap) -> Result<()> {
        match self.read_map(map.addr) {
            Ok(now) if now.id == map.id && now.name == map.name => Ok(()),
            _ => Err(Error::MapGone {
                name: map.name.clone(),
                id: map.id,
            }),
        }
    }

    /// The map's BTF, read from guest memory.
    pub fn map_btf(&self, map: &BpfMap) -> Result<MapBtf> {
        if map.btf == 0 || map.btf_value_type_id == 0 {
            return Err(Error::MapWithoutBtf(map.name.clone()));
        }
        let bytes = self.btf_bytes(map.btf)?;
        Ok(MapBtf {
            bytes,
            key: TypeId(map.btf_key_type_id),
            value: TypeId(map.btf_value_type_id),
        })
    }

    /// The raw BTF of the `struct btf` at `addr` (`btf->data`, `btf->data_size` bytes).
    pub fn btf_bytes(&self, addr: u64) -> Result<Vec<u8>> {
        let b = self.value(addr, "btf")?;
        let data = b.field("data")?.u64()?;
        let size = b.field("data_size")?.u64()?;
        if data == 0 {
            return Err(Error::Null {
                what: format!("btf->data of the struct btf at {addr:#x}"),
            });
        }
        if size > MAX_BTF {
            return Err(Error::TooLarge {
                what: "a program's BTF",
                len: size,
                max: MAX_BTF,
            });
        }
        let bytes = self.read_vec(data, size, "a program's BTF")?;
        if bytes.get(..2) != Some(&BTF_MAGIC[..]) {
            return Err(Error::Corrupt {
                what: "struct btf",
                addr,
                why: "its data does not start with the BTF magic".into(),
            });
        }
        Ok(bytes)
    }

    /// Element `index` of an array map (`BPF_MAP_TYPE_ARRAY`).
    pub fn array_value(&self, map: &BpfMap, index: u32) -> Result<Vec<u8>> {
        let at = self.array_value_addr(map, index)?;
        let v = self.read_vec(at, u64::from(map.value_size), "a map value")?;
        self.check_map(map)?;
        Ok(v)
    }

    fn array_value_addr(&self, map: &BpfMap, index: u32) -> Result<u64> {
        if map.map_type != BPF_MAP_TYPE_ARRAY {
            return Err(Error::WrongMapType {
                name: map.name.clone(),
                map_type: map.map_type,
                expected: "an array",
            });
        }
        self.check_index(map, index)?;
        let arr = self.value(map.addr, "bpf_array")?;
        let elem = arr.field("elem_size")?.u64()?;
        Ok(arr
            .field("value")?
            .addr()
            .wrapping_add(elem.wrapping_mul(u64::from(index))))
    }

    fn check_index(&self, map: &BpfMap, index: u32) -> Result<()> {
        if index >= map.max_entries {
            return Err(Error::Corrupt {
                what: "struct bpf_map",
                addr: map.addr,
                why: format!("index {index} of a map of {} entries", map.max_entries),
            });
        }
        Ok(())
    }

    /// `cpu`'s copy of element `index` of a per-CPU array map.
    pub fn percpu_array_value(&self, map: &BpfMap, index: u32, cpu: u32) -> Result<Vec<u8>> {
        if map.map_type != BPF_MAP_TYPE_PERCPU_ARRAY {
            return Err(Error::WrongMapType {
                name: map.name.clone(),
                map_type: map.map_type,
                expected: "a per-CPU array",
            });
        }
        self.check_index(map, index)?;
        let arr = self.value(map.addr, "bpf_array")?;
        let pptr = self.read_u64(arr.field("pptrs")?.addr() + 8 * u64::from(index))?;
        let at = pptr.wrapping_add(self.per_cpu_offset(cpu)?);
        let v = self.read_vec(at, u64::from(map.value_size), "a map value")?;
        self.check_map(map)?;
        Ok(v)
    }

    /// Every (key, value) of a hash map (`BPF_MAP_TYPE_HASH`, `BPF_MAP_TYPE_LRU_HASH`),
    /// walking its buckets' `hlist_nulls` chains.
    pub fn hash_entries(&self, map: &BpfMap) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if !matches!(map.map_type, BPF_MAP_TYPE_HASH | BPF_MAP_TYPE_LRU_HASH) {
            return Err(Error::WrongMapType {
                name: map.name.clone(),
                map_type: map.map_type,
                expected: "a hash map",
            });
        }
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
        let bucket_size = btf.size_of(btf.composite("bucket")?)?;
        let first_off = btf.member("bucket", "head.first")?.byte_offset();
        let next_off = btf.member("htab_elem", "hash_node.next")?.byte_offset();
        let key_off = btf.member("htab_elem", "key")?.byte_offset();
        let value_off = key_off + u64::from(map.key_size).next_multiple_of(8);
        let mut budget = MAX_STEPS;
        let mut out = Vec::new();
        // Buckets are read in chunks: a big (or garbage) count costs few guest reads.
        let per_chunk = (BUCKET_CHUNK / bucket_size.max(1)).max(1);
        let mut firsts = Vec::new();
        for start in (0..n).step_by(per_chunk as usize) {
            let count = per_chunk.min(n - start);
            let raw = self.read_vec(
                buckets.wrapping_add(start * bucket_size),
                count * bucket_size,
                "hash map buckets",
            )?;
            for i in 0..count {
                let at = (i * bucket_size + first_off) as usize;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw.get(at..at + 8).unwrap_or(&[0; 8]));
                let first = u64::from_le_bytes(b);
                if first & 1 == 0 && first != 0 {
                    firsts.push(first);
                }
            }
        }
        for first in firsts {
            for e in walk::nulls_chain(self, first, next_off, &mut budget)? {
                if out.len() as u64 >= MAX_ENTRIES {
                    return Err(Error::WalkLimit {
                        what: "a BPF hash map",
                        limit: MAX_ENTRIES,
                    });
                }
                let k = self.read_vec(e + key_off, u64::from(map.key_size), "a map key")?;
                let v = self.read_vec(e + value_off, u64::from(map.value_size), "a map value")?;
                out.push((k, v));
            }
        }
        self.check_map(map)?;
        Ok(out)
    }

    /// The global `name` of a loaded BPF program, from the first map (lowest id) whose value
    /// is a data section (`.bss`, `.data`, `.rodata`, ...) declaring it.
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let v = kernel.bpf_var("nr_dispatched")?;
    /// assert_eq!((v.as_u64(), v.section.as_str()), (Some(40), ".bss"));
    /// assert_eq!(kernel.bpf_var("sched_name")?.text, "\"fifo\"");
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn bpf_var(&self, name: &str) -> Result<BpfVar> {
        let mut btfs: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut searched = Vec::new();
        for map in self.bpf_maps()? {
            if map.map_type != BPF_MAP_TYPE_ARRAY
                || map.max_entries != 1
                || map.btf == 0
                || map.btf_value_type_id == 0
            {
                continue;
            }
            let bytes = match btfs.entry(map.btf) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.btf_bytes(map.btf)?),
            };
            let btf = Btf::parse(bytes)?;
            let sec = btf.ty(TypeId(map.btf_value_type_id))?;
            if sec.kind() != Kind::Datasec {
                continue;
            }
            searched.push(map.name.clone());
            let Ok(var) = btf.datasec_var(sec.name(), name) else {
                continue;
            };
            return self.read_var(&map, &btf, sec.name(), var);
        }
        Err(Error::NoSuchVar {
            name: name.to_string(),
            searched: if searched.is_empty() {
                "none with a data section".into()
            } else {
                searched.join(", ")
            },
        })
    }

    fn read_var(
        &self,
        map: &BpfMap,
        btf: &Btf<'_>,
        section: &str,
        var: DatasecVar<'_>,
    ) -> Result<BpfVar> {
        if u64::from(var.offset) + u64::from(var.size) > u64::from(map.value_size) {
            return Err(Error::Corrupt {
                what: "struct bpf_map",
                addr: map.addr,
                why: format!(
                    "{section} variable {} at {}+{} is outside the {}-byte value",
                    var.name, var.offset, var.size, map.value_size
                ),
            });
        }
        let at = self.array_value_addr(map, 0)? + u64::from(var.offset);
        let bytes = self.read_vec(at, u64::from(var.size), "a BPF global")?;
        self.check_map(map)?;
        Ok(BpfVar {
            name: var.name.to_string(),
            map: map.name.clone(),
            section: section.to_string(),
            offset: var.offset,
            text: btf.decode(var.ty, &bytes)?.to_string(),
            type_name: btf.type_name(var.ty)?,
            bytes,
        })
    }
}
