//! A crafted guest kernel in process memory, for tests, doc examples and the fuzz target. Not
//! part of the stable API: compiled only with the `testkit` feature (and for unit tests).
//!
//! 64 MiB of `GuestMemoryMmap` holding what the reader walks in a real guest: hand-made 4-level
//! page tables (vmalloc'ed objects are virtually contiguous, physically scattered), an image
//! with `nr_cpu_ids`, `__per_cpu_offset`, `scx_root`, `map_idr`, per-CPU `runqueues` for two
//! CPUs, a sched_ext scheduler with three user DSQs in its rhashtable, and four BPF maps in the
//! idr: `.bss` and `.data` arrays typed by a program BTF that lives in guest memory, a hash map
//! and an array without BTF. Layouts come from [`btf::kernel_btf`], whose offsets differ from
//! any real kernel's.

pub mod btf;

use std::sync::OnceLock;

use ktstr_btf::{Btf, Kind};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::kernel::GuestKernel;
use crate::symbols::KernelSymbols;
use crate::translate::{AddressLayout, PAGE_OFFSET_BASE_L4, START_KERNEL_MAP};
use crate::x86_64::{PageTable, PagingLevels};

/// Guest RAM size.
pub const RAM: u64 = 64 << 20;
/// Where vmalloc'ed objects are mapped (`VMALLOC_START` with 4-level paging, no KASLR).
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// Link address of `_text` (physical 16 MiB).
pub const TEXT: u64 = 0xffff_ffff_8100_0000;
/// `__per_cpu_start`: the per-CPU template inside the image.
pub const PER_CPU_START: u64 = 0xffff_ffff_8160_0000;
const VARS: u64 = 0xffff_ffff_8140_0000;
/// `map_idr` (a `struct idr` in the image).
pub const VARS_MAP_IDR: u64 = VARS + 0x300;

const TABLES: u64 = 0x10_0000;
const HEAP: u64 = 0x200_0000;
const VPAGES: u64 = 0x300_0000;

/// The crafted kernel's parsed BTF, built once per process.
pub fn kernel_btf() -> &'static Btf<'static> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    static BTF: OnceLock<Btf<'static>> = OnceLock::new();
    BTF.get_or_init(|| {
        let bytes = BYTES.get_or_init(btf::kernel_btf);
        Btf::parse(bytes).expect("the crafted kernel BTF is valid")
    })
}

/// Addresses of the crafted objects, for tests that corrupt them.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    /// `struct rq` of CPU 0 and 1.
    pub rqs: Vec<u64>,
    /// The current tasks of CPU 0 and 1.
    pub tasks: Vec<u64>,
    /// `struct scx_sched` (vmalloc'ed).
    pub scx_sched: u64,
    /// Its `struct bucket_table`.
    pub bucket_table: u64,
    /// The three user DSQs (ids 0x10, 0x11, 0x12).
    pub dsqs: Vec<u64>,
    /// The idr's `struct xa_node`.
    pub xa_node: u64,
    /// The program's `struct btf`.
    pub prog_btf: u64,
    /// The program's raw BTF bytes (vmalloc'ed).
    pub prog_btf_data: u64,
    /// `struct bpf_array` of `ktstr_fi.bss` (id 1), `ktstr_fi.data` (id 4), `stats` (id 3).
    pub bss_map: u64,
    /// See `bss_map`.
    pub data_map: u64,
    /// See `bss_map`.
    pub stats_map: u64,
    /// `struct bpf_htab` of `task_ctx` (id 2).
    pub hash_map: u64,
}

/// A crafted guest.
#[derive(Debug)]
pub struct Guest {
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// The kernel's symbols.
    pub syms: KernelSymbols,
    /// nokaslr, with the crafted page tables' root.
    pub layout: AddressLayout,
    /// Where things are.
    pub addrs: Addrs,
    vmap: Vec<(u64, u64)>,
    next: [u64; 4],
}

impl Default for Guest {
    fn default() -> Self {
        Self::new()
    }
}

impl Guest {
    /// The standard crafted guest.
    pub fn new() -> Guest {
        Self::with_ram(RAM)
    }

    /// The standard crafted guest with `ram` bytes of RAM (at least [`RAM`]); what lies past
    /// [`RAM`] is handed out by [`Guest::big`].
    pub fn with_ram(ram: u64) -> Guest {
        let ram = ram.max(RAM);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram as usize)])
            .expect("anonymous memory for the crafted guest");
        let syms = KernelSymbols::from_entries([
            ("_text", TEXT, b'T'),
            ("_end", TEXT + (8 << 20), b'B'),
            ("nr_cpu_ids", VARS, b'D'),
            ("__per_cpu_offset", VARS + 0x100, b'D'),
            ("page_offset_base", VARS + 0x200, b'D'),
            ("jiffies", VARS + 0x208, b'D'),
            ("scx_root", VARS + 0x210, b'B'),
            ("map_idr", VARS + 0x300, b'd'),
            ("init_task", VARS + 0x1000, b'D'),
            ("__per_cpu_start", PER_CPU_START, b'D'),
            ("runqueues", PER_CPU_START + 0x1000, b'D'),
        ]);
        let mut g = Guest {
            mem,
            syms,
            layout: AddressLayout::nokaslr(),
            addrs: Addrs::default(),
            vmap: Vec::new(),
            next: [TABLES, HEAP, VPAGES, RAM],
        };
        let pml4 = g.table();
        g.layout = g
            .layout
            .with_page_table(PageTable::new(pml4, PagingLevels::Four));
        g.fill();
        g
    }

    /// A reader over this guest.
    pub fn kernel(&self) -> GuestKernel<'_, GuestMemoryMmap> {
        GuestKernel::new(&self.mem, &self.syms, kernel_btf(), self.layout)
            .expect("the crafted symbols have _text and _end")
    }

    fn bump(&mut self, pool: usize, size: u64, align: u64) -> u64 {
        let at = self.next[pool].next_multiple_of(align.max(1));
        self.next[pool] = at + size;
        at
    }

    fn table(&mut self) -> u64 {
        self.bump(0, 4096, 4096)
    }

    /// `size` bytes of direct-mapped memory (what kmalloc hands out).
    pub fn heap(&mut self, size: u64) -> u64 {
        PAGE_OFFSET_BASE_L4 + self.bump(1, size, 64)
    }

    /// `size` bytes of direct-mapped memory past the standard 64 MiB (a guest made by
    /// [`Guest::with_ram`]), for big crafted objects.
    pub fn big(&mut self, size: u64) -> u64 {
        PAGE_OFFSET_BASE_L4 + self.bump(3, size, 64)
    }

    /// `size` bytes of vmalloc space: virtually contiguous pages backed by physical pages in
    /// descending order.
    pub fn vmalloc(&mut self, size: u64) -> u64 {
        let pages = size.div_ceil(4096).max(1);
        let va = VMALLOC_START + (self.vmap.len() as u64 + 1) * 4096 + 0x10_0000;
        let phys: Vec<u64> = (0..pages).map(|_| self.bump(2, 4096, 4096)).collect();
        for (i, pa) in phys.into_iter().rev().enumerate() {
            let page_va = va + i as u64 * 4096;
            self.map_4k(page_va, pa);
            self.vmap.push((page_va, pa));
        }
        // Leave an unmapped guard page after each area, as vmalloc does.
        self.vmap.push((va + pages * 4096, u64::MAX));
        va
    }

    fn map_4k(&mut self, va: u64, pa: u64) {
        let pml4 = self.layout.page_table().map_or(0, |p| p.cr3);
        let mut table = pml4;
        for level in [3u32, 2, 1] {
            let slot = table + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
            let entry: u64 = self.mem.read_obj(GuestAddress(slot)).unwrap_or(0);
            table = if entry & 1 == 0 {
                let t = self.table();
                self.put_phys(slot, &(t | 3).to_le_bytes());
                t
            } else {
                entry & 0x000f_ffff_ffff_f000
            };
        }
        let slot = table + ((va >> 12) & 0x1ff) * 8;
        self.put_phys(slot, &(pa | 3).to_le_bytes());
    }

    fn put_phys(&self, pa: u64, bytes: &[u8]) {
        self.mem
            .write_slice(bytes, GuestAddress(pa))
            .expect("crafted writes stay inside guest RAM");
    }

    fn phys_of(&self, va: u64) -> Option<u64> {
        if va >= START_KERNEL_MAP {
            return Some(va - START_KERNEL_MAP);
        }
        if va >= VMALLOC_START {
            let page = va & !4095;
            let (_, pa) = self.vmap.iter().find(|(v, _)| *v == page)?;
            return pa.checked_add(va & 4095);
        }
        va.checked_sub(PAGE_OFFSET_BASE_L4)
    }

    /// Write `bytes` at guest virtual `va` (image, direct map or vmalloc space).
    pub fn write(&self, va: u64, bytes: &[u8]) {
        assert!(
            self.poke(va, bytes),
            "crafted write at {va:#x} is outside guest RAM"
        );
    }

    /// Write what fits of `bytes` at `va`; false if some of it is unmapped or not guest RAM.
    pub fn poke(&self, va: u64, bytes: &[u8]) -> bool {
        let mut done = 0;
        let mut all = true;
        while done < bytes.len() {
            let at = va.wrapping_add(done as u64);
            let n = (4096 - (at & 4095) as usize).min(bytes.len() - done);
            let chunk = bytes.get(done..done + n).unwrap_or(&[]);
            all &= self
                .phys_of(at)
                .is_some_and(|pa| self.mem.write_slice(chunk, GuestAddress(pa)).is_ok());
            done += n;
        }
        all
    }

    /// Write what fits of `bytes` at guest physical `pa` (page tables included).
    pub fn poke_phys(&self, pa: u64, bytes: &[u8]) -> bool {
        self.mem.write_slice(bytes, GuestAddress(pa)).is_ok()
    }

    /// Write a little-endian u64.
    pub fn write_u64(&self, va: u64, v: u64) {
        self.write(va, &v.to_le_bytes());
    }

    /// Write member `path` of the kernel struct `ty` at `base` (as many bytes as its type).
    pub fn set(&self, base: u64, ty: &str, path: &str, v: u64) {
        let btf = kernel_btf();
        let m = btf.member(ty, path).expect("crafted member exists");
        let size = btf.size_of(m.ty).expect("sized member") as usize;
        self.write(base + m.byte_offset(), &v.to_le_bytes()[..size]);
    }

    /// Write raw bytes at member `path` of the kernel struct `ty` at `base`.
    pub fn set_bytes(&self, base: u64, ty: &str, path: &str, bytes: &[u8]) {
        let m = kernel_btf()
            .member(ty, path)
            .expect("crafted member exists");
        self.write(base + m.byte_offset(), bytes);
    }

    /// Offset of member `path` in the kernel struct `ty`.
    pub fn offset(ty: &str, path: &str) -> u64 {
        kernel_btf()
            .member(ty, path)
            .expect("crafted member exists")
            .byte_offset()
    }

    fn fill(&mut self) {
        self.write(VARS, &2u32.to_le_bytes());
        self.write_u64(VARS + 0x200, PAGE_OFFSET_BASE_L4);
        self.write_u64(VARS + 0x208, 4_294_937_296);
        for cpu in 0..2u64 {
            let area = self.heap(0x2000);
            self.write_u64(VARS + 0x100 + 8 * cpu, area.wrapping_sub(PER_CPU_START));
            let rq = area + 0x1000;
            let task = self.heap(64);
            self.set(task, "task_struct", "pid", 100 * cpu + cpu);
            let comm: &[u8] = if cpu == 0 {
                b"swapper/0\0"
            } else {
                b"worker-1\0"
            };
            self.set_bytes(task, "task_struct", "comm", comm);
            self.set(rq, "rq", "nr_running", 1 + 2 * cpu);
            self.set(rq, "rq", "clock", 1000 * (cpu + 1));
            self.set(rq, "rq", "scx.nr_running", 2 * cpu);
            self.set(rq, "rq", "scx.local_dsq.nr", 2 * cpu);
            self.set(rq, "rq", "curr", task);
            self.set(rq, "rq", "cpu", cpu);
            self.addrs.rqs.push(rq);
            self.addrs.tasks.push(task);
        }
        self.fill_scheduler();
        self.fill_maps();
    }

    fn fill_scheduler(&mut self) {
        let sch = self.vmalloc(512);
        self.set_bytes(sch, "scx_sched", "ops.name", b"ktstr_fifo\0");
        let tbl = self.heap(64 + 4 * 8);
        self.set(tbl, "bucket_table", "size", 4);
        self.set(sch, "scx_sched", "dsq_hash.tbl", tbl);
        self.set(sch, "scx_sched", "dsq_hash.nelems.counter", 3);
        let node = Self::offset("scx_dispatch_q", "hash_node");
        let buckets = tbl + Self::offset("bucket_table", "buckets");
        let mut dsqs = Vec::new();
        let list = Self::offset("scx_dispatch_q", "list");
        for (id, nr) in [(0x10u64, 5u64), (0x11, 0), (0x12, 1)] {
            let d = self.heap(64);
            self.set(d, "scx_dispatch_q", "id", id);
            self.set(d, "scx_dispatch_q", "nr", nr);
            // An empty list points at itself.
            self.write_u64(d + list, d + list);
            self.write_u64(d + list + 8, d + list);
            dsqs.push(d);
        }
        // DSQ 0x10 queues two tasks (of its 5) and a BPF iterator's cursor between them.
        let tnode = Self::offset("task_struct", "scx.dsq_list.node");
        let mut links = vec![dsqs[0] + list];
        for (pid, comm) in [(301u64, &b"stress-0\0"[..]), (302, b"stress-1\0")] {
            let t = self.heap(64);
            self.set(t, "task_struct", "pid", pid);
            self.set_bytes(t, "task_struct", "comm", comm);
            links.push(t + tnode);
            if pid == 301 {
                let cursor = self.heap(24);
                self.set(cursor, "scx_dsq_list_node", "flags", 1);
                links.push(cursor);
            }
        }
        for (i, &l) in links.iter().enumerate() {
            self.write_u64(l, links[(i + 1) % links.len()]);
        }
        for rq in self.addrs.rqs.clone() {
            let at = rq + Self::offset("rq", "scx.local_dsq.list");
            self.write_u64(at, at);
        }
        // Bucket 1 chains 0x10 -> 0x11 and ends in a nulls marker; bucket 3 holds 0x12 with
        // its lock bit set; buckets 0 and 2 are empty.
        self.write_u64(buckets + 8, dsqs[0] + node);
        self.write_u64(dsqs[0] + node, dsqs[1] + node);
        self.write_u64(dsqs[1] + node, (buckets + 8) | 1);
        self.write_u64(buckets + 24, (dsqs[2] + node) | 1);
        self.write_u64(dsqs[2] + node, (buckets + 24) | 1);
        self.write_u64(VARS + 0x210, sch);
        self.addrs.scx_sched = sch;
        self.addrs.bucket_table = tbl;
        self.addrs.dsqs = dsqs;
    }

    fn fill_maps(&mut self) {
        let prog = btf::program_btf();
        let pbtf = Btf::parse(&prog).expect("the crafted program BTF is valid");
        let bss_ty = pbtf.find_kind(".bss", Kind::Datasec).map_or(0, |t| t.0);
        let data_ty = pbtf.find_kind(".data", Kind::Datasec).map_or(0, |t| t.0);
        let ctx_ty = pbtf.find("task_ctx").map_or(0, |t| t.0);
        let int_ty = pbtf.find("int").map_or(0, |t| t.0);
        let data = self.vmalloc(prog.len() as u64);
        self.write(data, &prog);
        let kb = self.heap(256);
        self.set(kb, "btf", "data", data);
        self.set(kb, "btf", "data_size", prog.len() as u64);
        self.addrs.prog_btf = kb;
        self.addrs.prog_btf_data = data;

        let map =
            |g: &mut Guest, at: u64, ty: u32, k: u64, v: u64, n: u64, id: u64, name: &[u8]| {
                g.set(at, "bpf_map", "map_type", u64::from(ty));
                g.set(at, "bpf_map", "key_size", k);
                g.set(at, "bpf_map", "value_size", v);
                g.set(at, "bpf_map", "max_entries", n);
                g.set(at, "bpf_map", "id", id);
                g.set_bytes(at, "bpf_map", "name", name);
            };
        let value = Self::offset("bpf_array", "value");
        let bss = self.vmalloc(value + 32);
        map(
            self,
            bss,
            btf::BPF_MAP_TYPE_ARRAY,
            4,
            32,
            1,
            1,
            b"ktstr_fi.bss\0",
        );
        self.set(bss, "bpf_map", "btf", kb);
        self.set(bss, "bpf_map", "btf_value_type_id", u64::from(bss_ty));
        self.set(bss, "bpf_array", "elem_size", 32);
        self.write_u64(bss + value, 42);
        self.write_u64(bss + value + 8, 40);
        self.write(bss + value + 16, b"fifo\0");

        let dmap = self.vmalloc(value + 8);
        map(
            self,
            dmap,
            btf::BPF_MAP_TYPE_ARRAY,
            4,
            8,
            1,
            4,
            b"ktstr_fi.data\0",
        );
        self.set(dmap, "bpf_map", "btf", kb);
        self.set(dmap, "bpf_map", "btf_value_type_id", u64::from(data_ty));
        self.set(dmap, "bpf_array", "elem_size", 8);
        self.write_u64(dmap + value, 20_000_000);

        let stats = self.heap(value + 4 * 8);
        map(self, stats, btf::BPF_MAP_TYPE_ARRAY, 4, 8, 4, 3, b"stats\0");
        self.set(stats, "bpf_array", "elem_size", 8);
        for i in 0..4 {
            self.write_u64(stats + value + 8 * i, i + 1);
        }

        let htab = self.heap(320);
        map(
            self,
            htab,
            btf::BPF_MAP_TYPE_HASH,
            4,
            16,
            64,
            2,
            b"task_ctx\0",
        );
        self.set(htab, "bpf_map", "btf", kb);
        self.set(htab, "bpf_map", "btf_key_type_id", u64::from(int_ty));
        self.set(htab, "bpf_map", "btf_value_type_id", u64::from(ctx_ty));
        let buckets = self.heap(4 * 16);
        self.set(htab, "bpf_htab", "buckets", buckets);
        self.set(htab, "bpf_htab", "n_buckets", 4);
        let key_off = Self::offset("htab_elem", "key");
        let mut elems = Vec::new();
        for (pid, weight) in [(101u32, 100u64), (202, 50)] {
            let e = self.heap(key_off + 8 + 16);
            self.write(e + key_off, &pid.to_le_bytes());
            self.write(e + key_off + 8, &u64::from(pid).to_le_bytes());
            self.write_u64(e + key_off + 16, weight);
            elems.push(e);
        }
        // Bucket 2: elem 101 -> elem 202 -> nulls marker 2 ((2 << 1) | 1).
        self.write_u64(buckets + 2 * 16, elems[0]);
        self.write_u64(elems[0], elems[1]);
        self.write_u64(elems[1], (2 << 1) | 1);
        for b in [0u64, 1, 3] {
            self.write_u64(buckets + b * 16, (b << 1) | 1);
        }

        // map_idr: one xa_node (shift 0) holding ids 1..=4.
        let node = self.heap(576);
        let slots = node + Self::offset("xa_node", "slots");
        for (i, m) in [(1u64, bss), (2, htab), (3, stats), (4, dmap)] {
            self.write_u64(slots + 8 * i, m);
        }
        self.set(node, "xa_node", "count", 4);
        self.set(VARS + 0x300, "idr", "idr_rt.xa_head", node | 2);
        self.set(VARS + 0x300, "idr", "idr_next", 5);
        self.addrs.xa_node = node;
        self.addrs.bss_map = bss;
        self.addrs.data_map = dmap;
        self.addrs.stats_map = stats;
        self.addrs.hash_map = htab;
    }
}
