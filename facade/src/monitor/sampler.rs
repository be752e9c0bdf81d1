//! One read of the guest: runqueues, the scheduler's DSQs and their oldest
//! waits, sched_ext event counters and BPF globals. Everything looked up by
//! name (symbols, BTF members, the event counters' layout) is resolved once
//! per VM; what can change while the guest runs (maps, DSQs) is read each time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktstr_btf::{Btf, Kind, TypeId};
use ktstr_guest_mem::{
    AddressLayout, BPF_MAP_TYPE_ARRAY, BpfMap, GuestKernel, PageTable, PagingLevels,
    START_KERNEL_MAP,
};
use vm_memory::GuestMemory;

use super::{CpuSample, DsqSample, Global, MonitorError, Sample, SampleKind, Schedstat};

/// Most data-section maps read per sample (a guest with hundreds of BPF
/// programs is not what the monitor is for).
const MAX_DATA_MAPS: usize = 64;

/// `k`'s layout (slide, `phys_base`, direct map) walking page tables from
/// the kernel's own `init_top_pgt` (kernel-half mappings are the same in
/// every address space): no vCPU register is needed for the walks.
pub(crate) fn kernel_layout<M: GuestMemory + ?Sized>(
    k: &GuestKernel<'_, M>,
) -> Result<AddressLayout, MonitorError> {
    let base = k.layout();
    let pgt = k.symbol("init_top_pgt")?;
    // `__pgtable_l5_enabled` (7.x) or `pgtable_l5_enabled` (older); absent: 4 levels.
    let l5 = ["__pgtable_l5_enabled", "pgtable_l5_enabled"]
        .iter()
        .find_map(|s| k.symbol(s).ok())
        .map(|va| k.read_u32(va))
        .transpose()?
        .unwrap_or(0)
        != 0;
    let levels = if l5 {
        PagingLevels::Five
    } else {
        PagingLevels::Four
    };
    let root = pgt
        .wrapping_sub(START_KERNEL_MAP)
        .wrapping_add(base.phys_base());
    Ok(base.with_page_table(PageTable::new(root, levels)))
}

/// A data-section map as first seen: its variables, from its own BTF.
#[derive(Debug)]
struct DataMap {
    vars: Vec<(String, u32, u32, String)>,
}

/// Reads samples of one guest.
pub(crate) struct Sampler<'k, M: GuestMemory + ?Sized> {
    k: GuestKernel<'k, M>,
    /// `struct scx_event_stats` members: (name, byte offset, size).
    events: Option<Vec<(String, u64, u64)>>,
    /// Data-section maps by (id, address of their `struct btf`); `None`: not one.
    maps: HashMap<(u32, u64), Option<Arc<DataMap>>>,
    /// `struct rq` schedstat members: (byte offset, size) in [`SCHEDSTAT_PATHS`]
    /// order, and the span to read; `None`: no `CONFIG_SCHEDSTATS`.
    schedstat: Option<SchedstatLayout>,
    /// Most CPUs believed (`None`: any `nr_cpu_ids`).
    max_cpus: Option<u32>,
}

/// (offset, size) of each schedstat member, the first byte, the span.
type SchedstatLayout = (Vec<(u64, u64)>, u64, u64);

/// The schedstat members of `struct rq`, in [`Schedstat`]'s field order.
const SCHEDSTAT_PATHS: [&str; 7] = [
    "rq_sched_info.run_delay",
    "rq_sched_info.pcount",
    "yld_count",
    "sched_count",
    "sched_goidle",
    "ttwu_count",
    "ttwu_local",
];

/// (offsets and sizes, first byte, span) of the schedstat members in `btf`'s `struct rq`.
fn schedstat_layout(btf: &Btf<'_>) -> Option<SchedstatLayout> {
    let fields = SCHEDSTAT_PATHS
        .iter()
        .map(|p| {
            let m = btf.member("rq", p).ok()?;
            let size = btf.size_of(m.ty).ok()?;
            (m.bit_offset % 8 == 0 && (1..=8).contains(&size)).then_some((m.bit_offset / 8, size))
        })
        .collect::<Option<Vec<_>>>()?;
    let lo = fields.iter().map(|f| f.0).min()?;
    let hi = fields.iter().map(|f| f.0 + f.1).max()?;
    Some((fields, lo, hi - lo))
}

impl<'k, M: GuestMemory + ?Sized> Sampler<'k, M> {
    /// The kernel it reads (for the failure dump).
    pub(crate) fn kernel(&self) -> &GuestKernel<'k, M> {
        &self.k
    }

    /// A sampler of the kernel `k`.
    pub(crate) fn new(k: GuestKernel<'k, M>) -> Self {
        let btf = k.btf();
        let events = btf.composite("scx_event_stats").ok().and_then(|id| {
            let t = btf.ty(id).ok()?;
            t.members()
                .map(|m| {
                    let size = btf.size_of(m.ty).ok()?;
                    Some((m.name.to_string(), u64::from(m.bit_offset / 8), size))
                })
                .collect::<Option<Vec<_>>>()
        });
        let schedstat = schedstat_layout(btf);
        Sampler {
            k,
            events,
            maps: HashMap::new(),
            schedstat,
            max_cpus: None,
        }
    }

    /// Reads no CPU while the guest's `nr_cpu_ids` exceeds `n` (early boot,
    /// where it still holds `NR_CPUS`: thousands of runqueues not set up).
    pub(crate) fn with_max_cpus(mut self, n: u32) -> Self {
        self.max_cpus = Some(n).filter(|n| *n > 0);
        self
    }

    /// `nr_cpu_ids`, once the guest has counted its CPUs.
    fn nr_cpus(&self) -> Result<u32, MonitorError> {
        let n = self.k.nr_cpu_ids()?;
        match self.max_cpus {
            Some(max) if n > max => Err(MonitorError::Missing(format!(
                "nr_cpu_ids is {n}, the VM has {max} CPUs: the guest has not counted them yet"
            ))),
            _ => Ok(n),
        }
    }

    /// The guest clock: the largest `rq->clock` of any CPU (what the
    /// samples' series are timed by), `None` before the runqueues read.
    pub(crate) fn guest_clock(&mut self) -> Option<u64> {
        self.k.forget_translations();
        let n = self.nr_cpus().ok()?;
        // Only the one field: a replay reads this at every stop.
        (0..n)
            .filter_map(|cpu| self.k.rq(cpu).ok()?.get("clock").ok()??.u64().ok())
            .max()
    }

    /// One full read of the guest, stamped `kind` at `elapsed`.
    pub(crate) fn sample(&mut self, kind: SampleKind, elapsed: Duration) -> Sample {
        let t0 = Instant::now();
        self.k.forget_translations();
        let cpus = self.cpus();
        let clock = cpus
            .as_ref()
            .ok()
            .and_then(|c| c.iter().filter_map(|c| c.clock).max());
        let sch = self.k.scx_sched();
        let scheduler = match &sch {
            Ok(Some(s)) => s
                .field("ops.name")
                .and_then(|n| n.string())
                .map(Some)
                .map_err(Into::into),
            Ok(None) => Ok(None),
            Err(e) => Err(MonitorError::Read(e.to_string())),
        };
        let dsqs = self.dsqs(clock);
        let events = self.events();
        let globals = self.globals();
        Sample {
            kind,
            elapsed,
            paused: None,
            read_time: t0.elapsed(),
            cpus,
            scheduler,
            dsqs,
            events,
            globals,
        }
    }

    fn cpus(&self) -> Result<Vec<CpuSample>, MonitorError> {
        // Read each time: the image's initial value (NR_CPUS) holds until the
        // guest counted its CPUs.
        let n = self.nr_cpus()?;
        (0..n)
            .map(|cpu| {
                let s = self.k.rq_sample(cpu)?;
                let rq = self.k.rq(cpu)?;
                let wait = self
                    .first_task_queued(rq.field("scx.local_dsq")?.addr())
                    .ok()
                    .flatten();
                let schedstat = self.schedstat(rq.addr())?;
                let nr_switches = rq.get("nr_switches")?.map(|v| v.u64()).transpose()?;
                Ok(CpuSample {
                    cpu,
                    nr_running: s.nr_running,
                    clock: s.clock,
                    scx_nr_running: s.scx_nr_running,
                    nr_switches,
                    local_dsq_nr: s.local_dsq_nr,
                    curr_pid: s.curr_pid,
                    curr_comm: s.curr_comm,
                    oldest_wait_ns: wait.zip(s.clock).map(|(q, c)| c.saturating_sub(q)),
                    schedstat,
                })
            })
            .collect()
    }

    /// The schedstats of the `struct rq` at `rq`, in one read.
    fn schedstat(&self, rq: u64) -> Result<Option<Schedstat>, MonitorError> {
        let Some((fields, lo, len)) = &self.schedstat else {
            return Ok(None);
        };
        let bytes = self
            .k
            .read_vec(rq.wrapping_add(*lo), *len, "rq schedstats")?;
        let v: Vec<u64> = fields
            .iter()
            .map(|(off, size)| {
                let at = (off - lo) as usize;
                let mut b = [0u8; 8];
                if let Some(raw) = bytes.get(at..at + *size as usize) {
                    b[..raw.len()].copy_from_slice(raw);
                }
                u64::from_le_bytes(b)
            })
            .collect();
        Ok(Some(Schedstat {
            run_delay: v[0],
            pcount: v[1],
            yld_count: v[2],
            sched_count: v[3],
            sched_goidle: v[4],
            ttwu_count: v[5],
            ttwu_local: v[6],
        }))
    }

    /// `sched_info.last_queued` of the first task of the DSQ at `dsq`
    /// (`None`: empty, or the task is not waiting).
    fn first_task_queued(&self, dsq: u64) -> Result<Option<u64>, MonitorError> {
        let d = self.k.value(dsq, "scx_dispatch_q")?;
        let task = match d.get("first_task")? {
            Some(first) => first.u64()?,
            // Kernels before `first_task` (6.18 and older): the FIFO list.
            None => self.first_in_list(dsq)?,
        };
        if task == 0 {
            return Ok(None);
        }
        let q = self
            .k
            .value(task, "task_struct")?
            .field("sched_info.last_queued")?
            .u64()?;
        Ok((q != 0).then_some(q))
    }

    /// The first task on the DSQ's `list` (tasks link through
    /// `task_struct.scx.dsq_list.node`), skipping BPF iterators' cursors
    /// (`SCX_DSQ_LNODE_ITER_CURSOR`, bit 0 of the node's flags; kernel
    /// `include/linux/sched/ext.h`); 0 when empty. Bounded: guest memory
    /// read while the guest runs may be mid-update.
    fn first_in_list(&self, dsq: u64) -> Result<u64, MonitorError> {
        const ITER_CURSOR: u64 = 1;
        let d = self.k.value(dsq, "scx_dispatch_q")?;
        let head = d.field("list")?.addr();
        // Offsets within task_struct, from a view at address 0 (nothing is read).
        let t0 = self.k.value(0, "task_struct")?;
        let node_off = t0.field("scx.dsq_list.node")?.addr();
        let flags_off = t0.field("scx.dsq_list.flags")?.addr();
        let mut node = d.field("list.next")?.u64()?;
        for _ in 0..8 {
            if node == head || node == 0 {
                return Ok(0);
            }
            let task = node.wrapping_sub(node_off);
            let flags = self.k.read_u64(task.wrapping_add(flags_off))? & 0xffff_ffff;
            if flags & ITER_CURSOR == 0 {
                return Ok(task);
            }
            node = self.k.read_u64(node)?;
        }
        Ok(0)
    }

    fn dsqs(&self, clock: Option<u64>) -> Result<Vec<DsqSample>, MonitorError> {
        Ok(self
            .k
            .user_dsqs()?
            .into_iter()
            .map(|d| DsqSample {
                id: d.id,
                nr: d.nr,
                oldest_wait_ns: self
                    .first_task_queued(d.addr)
                    .ok()
                    .flatten()
                    .zip(clock)
                    .map(|(q, c)| c.saturating_sub(q)),
            })
            .collect())
    }

    fn events(&self) -> Result<Vec<(String, i64)>, MonitorError> {
        let Some(members) = &self.events else {
            return Err(MonitorError::Missing(
                "this kernel has no sched_ext event counters (struct scx_event_stats)".into(),
            ));
        };
        let Some(sch) = self.k.scx_sched()? else {
            return Ok(Vec::new());
        };
        let pcpu = sch.field("pcpu")?.u64()?;
        let mut sums = vec![0i64; members.len()];
        for cpu in 0..self.nr_cpus()? {
            let at = pcpu.wrapping_add(self.k.per_cpu_offset(cpu)?);
            let stats = self.k.value(at, "scx_sched_pcpu")?.field("event_stats")?;
            let bytes = stats.bytes()?;
            for (sum, (_, off, size)) in sums.iter_mut().zip(members) {
                let raw = bytes
                    .get(*off as usize..(*off + *size) as usize)
                    .unwrap_or(&[]);
                let mut b = [0u8; 8];
                b.get_mut(..raw.len().min(8))
                    .unwrap_or(&mut [])
                    .copy_from_slice(raw.get(..raw.len().min(8)).unwrap_or(&[]));
                *sum = sum.wrapping_add(i64::from_le_bytes(b));
            }
        }
        Ok(members
            .iter()
            .zip(sums)
            .map(|((n, _, _), v)| (n.clone(), v))
            .collect())
    }

    fn data_map(&mut self, map: &BpfMap) -> Option<Arc<DataMap>> {
        if map.map_type != BPF_MAP_TYPE_ARRAY
            || map.max_entries != 1
            || map.btf == 0
            || map.btf_value_type_id == 0
        {
            return None;
        }
        let key = (map.id, map.btf);
        if let Some(d) = self.maps.get(&key) {
            return d.clone();
        }
        // Err: could not be read now (maybe torn), tried again next time.
        let parsed: Result<Option<Arc<DataMap>>, ()> = (|| {
            let bytes = self.k.btf_bytes(map.btf).map_err(drop)?;
            let btf = Btf::parse(&bytes).map_err(drop)?;
            let sec = btf.ty(TypeId(map.btf_value_type_id)).map_err(drop)?;
            if sec.kind() != Kind::Datasec {
                return Ok(None);
            }
            let vars = btf
                .datasec_vars(sec.name())
                .map_err(drop)?
                .filter(|v| u64::from(v.offset) + u64::from(v.size) <= u64::from(map.value_size))
                .map(|v| {
                    let ty = btf.type_name(v.ty).unwrap_or_else(|_| "?".into());
                    (v.name.to_string(), v.offset, v.size, ty)
                })
                .collect();
            Ok(Some(Arc::new(DataMap { vars })))
        })();
        let parsed = parsed.ok()?;
        self.maps.insert(key, parsed.clone());
        parsed
    }

    fn globals(&mut self) -> Result<Vec<Global>, MonitorError> {
        let maps = self.k.bpf_maps()?;
        let mut out = Vec::new();
        for map in maps.iter().take(MAX_DATA_MAPS * 4) {
            let Some(data) = self.data_map(map) else {
                continue;
            };
            // A map freed since the walk is gone from this sample, not an error.
            let Ok(value) = self.k.array_value(map, 0) else {
                continue;
            };
            for (name, off, size, ty) in &data.vars {
                let Some(bytes) = value.get(*off as usize..(*off + *size) as usize) else {
                    continue;
                };
                out.push(Global {
                    name: name.clone(),
                    map: map.name.clone(),
                    map_id: map.id,
                    type_name: ty.clone(),
                    bytes: bytes.to_vec(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
