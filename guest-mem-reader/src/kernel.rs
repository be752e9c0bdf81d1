//! [`GuestKernel`]: one running guest kernel seen from the host — its memory, its symbols, its
//! BTF and how its addresses translate — with bounded, fallible reads.

use std::collections::HashMap;
use std::sync::Mutex;

use ktstr_btf::{Btf, BtfError, Kind, MemberInfo, TypeId};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::error::{Error, Result};
use crate::symbols::KernelSymbols;
use crate::translate::{AddressLayout, Translator};
use crate::value::Value;

/// Largest single read (BTF blobs, bucket arrays, map values): a garbage length is an error,
/// not a multi-gigabyte allocation.
pub const MAX_READ: u64 = 64 << 20;
/// Most CPUs believed (`NR_CPUS` is at most 8192 in Linux's Kconfig).
pub const MAX_CPUS: u32 = 8192;

/// A running guest kernel: typed reads of its memory through `M`, any [`GuestMemory`] (both
/// VM backends hand guest RAM out that way; the reader never knows which one runs).
///
/// Cheap to build: hold one per sampling thread, or build one per sample.
pub struct GuestKernel<'k, M: ?Sized> {
    mem: &'k M,
    syms: &'k KernelSymbols,
    btf: &'k Btf<'k>,
    tr: Translator,
    /// Member lookups already answered: a sampler asks the same few paths of
    /// the same types at every sample, and a BTF path walk costs microseconds.
    members: MemberCache,
    /// Page-table walks already done: 4 KiB virtual page -> physical page.
    /// Cleared by [`GuestKernel::forget_translations`] (a sampler does so
    /// before each sample, so a mapping the guest changed is seen within one
    /// sample) and when it grows past [`TLB_MAX`].
    tlb: Mutex<HashMap<u64, u64>>,
}

/// Most remembered page-table walks.
const TLB_MAX: usize = 4096;

/// Bounded: paths come from code and from test authors, not from the guest,
/// but a long-lived reader should still not grow without end.
const MEMBER_CACHE_MAX: usize = 4096;

type MemberCache = Mutex<HashMap<(TypeId, String), std::result::Result<MemberInfo, BtfError>>>;

// By hand: the derived form would print every symbol and the whole BTF.
impl<M: ?Sized> std::fmt::Debug for GuestKernel<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestKernel")
            .field("layout", &self.tr.layout)
            .field(
                "image",
                &format_args!("{:#x}..{:#x}", self.tr.image.0, self.tr.image.1),
            )
            .field("symbols", &self.syms.len())
            .field("btf_types", &self.btf.type_count())
            .finish_non_exhaustive()
    }
}

impl<'k, M: GuestMemory + ?Sized> GuestKernel<'k, M> {
    /// A view of the kernel whose symbols are `syms` and whose BTF is `btf`, running in `mem`
    /// laid out as `layout`. Fails if the symbols lack `_text` or `_end` (not a kernel's).
    pub fn new(
        mem: &'k M,
        syms: &'k KernelSymbols,
        btf: &'k Btf<'k>,
        layout: AddressLayout,
    ) -> Result<Self> {
        let sym = |n: &str| {
            syms.address(n)
                .ok_or_else(|| Error::NoSymbol(n.to_string()))
        };
        let image = (sym("_text")?, sym("_end")?);
        Ok(GuestKernel {
            mem,
            syms,
            btf,
            tr: Translator::new(layout, image, mem),
            members: Mutex::new(HashMap::new()),
            tlb: Mutex::new(HashMap::new()),
        })
    }

    /// The same view with `page_offset_base` read from the guest's own variable (through the
    /// image mapping, which does not need it): right whatever KASLR or 5-level paging did.
    pub fn with_page_offset_base_from_guest(self) -> Result<Self> {
        let pob = self.read_u64(self.symbol("page_offset_base")?)?;
        let layout = self.tr.layout.with_page_offset_base(pob);
        Ok(GuestKernel {
            tr: Translator::new(layout, self.link_image(), self.mem),
            ..self
        })
    }

    fn link_image(&self) -> (u64, u64) {
        let slide = self.tr.layout.kaslr_offset();
        (
            self.tr.image.0.wrapping_sub(slide),
            self.tr.image.1.wrapping_sub(slide),
        )
    }

    /// [`Btf::member_of`], remembered: the same answer without walking the path again.
    pub(crate) fn member_of(
        &self,
        ty: TypeId,
        path: &str,
    ) -> std::result::Result<MemberInfo, BtfError> {
        let mut cache = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cache.get(&(ty, path.to_string())) {
            return r.clone();
        }
        let r = self.btf.member_of(ty, path);
        if cache.len() >= MEMBER_CACHE_MAX {
            cache.clear();
        }
        cache.insert((ty, path.to_string()), r.clone());
        r
    }

    /// Forgets the page-table walks remembered so far: the next read of each
    /// page walks the guest's page tables again. A long-lived reader calls it
    /// before each coherent read (a sample), as the guest may have remapped.
    pub fn forget_translations(&self) {
        self.tlb.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// (physical address, bytes contiguous) of `va`, remembering page walks.
    fn translate_run(&self, va: u64) -> Result<(u64, u64)> {
        if self.tr.by_arithmetic(va) {
            return self.tr.translate(self.mem, va);
        }
        let (page, off) = (va & !0xfff, va & 0xfff);
        let mut tlb = self.tlb.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pa) = tlb.get(&page) {
            return Ok((pa + off, 0x1000 - off));
        }
        let (pa, run) = self.tr.translate(self.mem, va)?;
        if run >= 0x1000 - off {
            if tlb.len() >= TLB_MAX {
                tlb.clear();
            }
            tlb.insert(page, pa - off);
        }
        Ok((pa, run.min(0x1000 - off)))
    }

    /// The address layout in use.
    pub fn layout(&self) -> AddressLayout {
        self.tr.layout
    }

    /// The kernel's BTF.
    pub fn btf(&self) -> &'k Btf<'k> {
        self.btf
    }

    /// The kernel's symbols.
    pub fn symbols(&self) -> &'k KernelSymbols {
        self.syms
    }

    /// Guest memory.
    pub fn memory(&self) -> &'k M {
        self.mem
    }

    /// Running address of the symbol `name` (link address plus the KASLR slide).
    pub fn symbol(&self, name: &str) -> Result<u64> {
        self.syms
            .address(name)
            .map(|a| a.wrapping_add(self.tr.layout.kaslr_offset()))
            .ok_or_else(|| Error::NoSymbol(name.to_string()))
    }

    /// Guest physical address of `va`.
    pub fn translate(&self, va: u64) -> Result<u64> {
        self.translate_run(va).map(|(pa, _)| pa)
    }

    /// Bytes of `[start, end)` the kernel's page tables map (e.g. the pages a BPF arena has
    /// in use in its 4 GiB range). Needs the page-table root; reads at most a bounded number
    /// of table entries.
    pub fn mapped_bytes(&self, start: u64, end: u64) -> Result<u64> {
        let pt = self
            .tr
            .layout
            .page_table()
            .ok_or(Error::NoPageTable { va: start })?;
        crate::x86_64::mapped_bytes(self.mem, pt, start, end, 1 << 22)
    }

    /// Read guest physical memory.
    pub fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<()> {
        self.mem
            .read_slice(buf, GuestAddress(pa))
            .map_err(|_| Error::PhysRead {
                addr: pa,
                len: buf.len(),
            })
    }

    /// Read `buf.len()` bytes at guest virtual `va`, translating page by page.
    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let (pa, run) = self.translate_run(at)?;
            let n = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let chunk = buf.get_mut(done..done + n).unwrap_or(&mut []);
            self.read_phys(pa, chunk)?;
            done += n.max(1);
        }
        Ok(())
    }

    /// `len` bytes at `va`, at most [`MAX_READ`].
    pub fn read_vec(&self, va: u64, len: u64, what: &'static str) -> Result<Vec<u8>> {
        if len > MAX_READ {
            return Err(Error::TooLarge {
                what,
                len,
                max: MAX_READ,
            });
        }
        let mut v = vec![0u8; len as usize];
        self.read(va, &mut v)?;
        Ok(v)
    }

    /// A little-endian `u64` at `va`.
    pub fn read_u64(&self, va: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A little-endian `u32` at `va`.
    pub fn read_u32(&self, va: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A NUL-terminated string at `va`, at most `max` bytes (lossy UTF-8).
    pub fn read_cstr(&self, va: u64, max: usize) -> Result<String> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            let n = chunk.len().min(max - out.len());
            // Read up to the end of the page only, so a string near an unmapped page reads.
            let to_page_end = 4096 - ((va + out.len() as u64) & 4095) as usize;
            let n = n.min(to_page_end);
            let buf = chunk.get_mut(..n).unwrap_or(&mut []);
            self.read(va + out.len() as u64, buf)?;
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(buf.get(..end).unwrap_or(&[]));
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(buf);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The guest's `nr_cpu_ids`: the number of possible CPU ids.
    pub fn nr_cpu_ids(&self) -> Result<u32> {
        let va = self.symbol("nr_cpu_ids")?;
        let n = self.read_u32(va)?;
        if n == 0 || n > MAX_CPUS {
            return Err(Error::Corrupt {
                what: "nr_cpu_ids",
                addr: va,
                why: format!("{n} CPUs"),
            });
        }
        Ok(n)
    }

    /// `__per_cpu_offset[cpu]`: what to add to a per-CPU symbol's address for `cpu`'s copy.
    pub fn per_cpu_offset(&self, cpu: u32) -> Result<u64> {
        let nr_cpu_ids = self.nr_cpu_ids()?;
        if cpu >= nr_cpu_ids {
            return Err(Error::NoSuchCpu { cpu, nr_cpu_ids });
        }
        self.read_u64(self.symbol("__per_cpu_offset")? + 8 * u64::from(cpu))
    }

    /// Address of `cpu`'s copy of the per-CPU variable `name` (`symbol + __per_cpu_offset[cpu]`,
    /// wrapping: per-CPU symbols are not zero-based in Linux 6.15+ and were before).
    pub fn per_cpu(&self, name: &str, cpu: u32) -> Result<u64> {
        Ok(self.symbol(name)?.wrapping_add(self.per_cpu_offset(cpu)?))
    }

    /// `cpu`'s copy of the per-CPU variable `name`, typed by BTF's `.data..percpu` section.
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let rq = kernel.per_cpu_var("runqueues", 1)?;
    /// assert_eq!(rq.field("nr_running")?.u64()?, 3);
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn per_cpu_var(&self, name: &str, cpu: u32) -> Result<Value<'_, M>> {
        let var = self.btf.datasec_var(".data..percpu", name)?;
        Ok(self.value_of(self.per_cpu(name, cpu)?, var.ty))
    }

    /// The global `name` read as the struct, union or typedef `ty_name` (vmlinux BTF types
    /// only per-CPU variables, so the caller names the type of the others).
    pub fn global(&self, name: &str, ty_name: &str) -> Result<Value<'_, M>> {
        self.value(self.symbol(name)?, ty_name)
    }

    /// The value at `va` of the type named `ty_name` (a struct or union, or any named type).
    pub fn value(&self, va: u64, ty_name: &str) -> Result<Value<'_, M>> {
        let ty = match self.btf.composite(ty_name) {
            Ok(t) => t,
            Err(e) => self
                .btf
                .find_all(ty_name)
                .find(|&id| {
                    self.btf
                        .ty(id)
                        .is_ok_and(|t| !matches!(t.kind(), Kind::Func | Kind::Var | Kind::Datasec))
                })
                .ok_or(e)?,
        };
        Ok(self.value_of(va, ty))
    }

    /// The value at `va` of type `ty`.
    pub fn value_of(&self, va: u64, ty: TypeId) -> Value<'_, M> {
        Value::new(self, va, ty)
    }
}
