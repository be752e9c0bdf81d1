//! A failure dump: the scheduler's own state as it sees it, read in one go from a paused
//! guest — its globals (`.bss`, `.data`, `.rodata`) decoded by its BTF, its maps (bounded:
//! the first entries and the total count), per-CPU maps per CPU, and the DSQs with the tasks
//! queued on them.
//!
//! Every part is read on its own: a map freed during the read, a garbage pointer or a
//! scheduler without BTF is a message in that part ([`MapDump::note`], an `Err` of
//! [`SchedulerDump::dsqs`]), and the rest of the dump is still read.
//!
//! ```
//! # let guest = ktstr_guest_mem::testkit::Guest::new();
//! # let kernel = guest.kernel();
//! let dump = kernel.scheduler_dump(&ktstr_guest_mem::DumpLimits::default());
//! let bss = dump.sections.iter().find(|s| s.section == ".bss").unwrap();
//! let vars = bss.vars.as_ref().unwrap();
//! assert_eq!((vars[1].name.as_str(), vars[1].value.as_str()), ("nr_dispatched", "40"));
//! let ctx = dump.maps.iter().find(|m| m.name == "task_ctx").unwrap();
//! assert_eq!((ctx.total, ctx.entries.len()), (Some(2), 2));
//! assert_eq!(ctx.entries[0].key, "101");
//! # Ok::<(), ktstr_guest_mem::Error>(())
//! ```

mod dsq;
mod maps;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use vm_memory::GuestMemory;

use crate::error::Error;
use crate::kernel::GuestKernel;

/// How much of the scheduler's state a dump reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpLimits {
    /// Entries shown per map (and tasks per DSQ); the rest are counted.
    pub entries: usize,
    /// Maps read at most (the rest are named and counted).
    pub maps: usize,
    /// Chain links followed at most to count a hash map's entries.
    pub count_steps: u64,
    /// CPUs read at most for per-CPU maps and local DSQs.
    pub cpus: u32,
}

impl Default for DumpLimits {
    fn default() -> Self {
        DumpLimits {
            entries: 16,
            maps: 64,
            count_steps: 1 << 24,
            cpus: 64,
        }
    }
}

/// The scheduler's state, read at one instant.
#[derive(Debug)]
pub struct SchedulerDump {
    /// The attached sched_ext scheduler (`None`: none attached, e.g. after its exit).
    pub scheduler: Result<Option<String>, Error>,
    /// The data sections (`.bss`, `.data`, `.rodata`, ...) of the loaded programs.
    pub sections: Vec<SectionDump>,
    /// The other maps.
    pub maps: Vec<MapDump>,
    /// Why the maps could not be listed at all (`map_idr` unreadable).
    pub maps_error: Option<String>,
    /// Maps loaded beyond [`DumpLimits::maps`], not read.
    pub maps_left_out: usize,
    /// The scheduler's DSQs and the CPUs' non-empty local DSQs, with their tasks.
    pub dsqs: Result<Vec<DsqDump>, Error>,
    /// How long reading took.
    pub read_time: Duration,
}

/// One data-section map: every variable, decoded by the program's BTF.
#[derive(Debug)]
pub struct SectionDump {
    /// The map (`ktstr_bpf.bss`).
    pub map: String,
    /// Its id.
    pub map_id: u32,
    /// The section (`.bss`); the map's name when its BTF could not be read.
    pub section: String,
    /// The variables, or why they could not be read.
    pub vars: Result<Vec<VarDump>, SectionError>,
}

/// Why a data section's variables could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SectionError {
    /// The map has no BTF.
    #[error("the map has no BTF: its variables cannot be named")]
    NoBtf,
    /// The map's BTF could not be read from guest memory.
    #[error("reading the map's BTF: {0}")]
    MapBtf(Error),
    /// The map's BTF is malformed.
    #[error("the map's BTF does not parse: {0}")]
    BtfParse(ktstr_btf::BtfError),
    /// The section's value could not be read.
    #[error("reading the section: {0}")]
    Read(Error),
    /// The BTF has no such data section.
    #[error(transparent)]
    Btf(ktstr_btf::BtfError),
}

/// A global variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarDump {
    /// Its name.
    pub name: String,
    /// Its C type.
    pub type_name: String,
    /// Its value as the BTF decodes it (structs, arrays, enumerators by name, cpumasks).
    pub value: String,
    /// The value as an integer, for 1- to 8-byte integers.
    pub int: Option<u64>,
}

/// One map: its header and its first entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDump {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// The type's name (`hash`, `percpu_array`).
    pub kind: String,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Entries in use (`None`: not counted).
    pub total: Option<u64>,
    /// The first entries (per CPU for per-CPU maps).
    pub entries: Vec<EntryDump>,
    /// Why the contents are missing or incomplete (freed map, garbage, no BTF, a type not read).
    pub note: Option<String>,
}

impl MapDump {
    /// Entries counted but not shown (per-CPU entries count once per key).
    pub fn left_out(&self) -> u64 {
        let shown_keys = {
            let mut keys: Vec<&str> = self.entries.iter().map(|e| e.key.as_str()).collect();
            keys.dedup();
            keys.len() as u64
        };
        self.total.unwrap_or(0).saturating_sub(shown_keys)
    }
}

/// One entry of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDump {
    /// The key (decoded by BTF, else an integer or hex).
    pub key: String,
    /// The CPU, for a per-CPU map.
    pub cpu: Option<u32>,
    /// The value.
    pub value: String,
}

/// A DSQ and what is queued on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsqDump {
    /// `"0x10"` for a user DSQ, `"local cpu3"` for a CPU's local DSQ.
    pub name: String,
    /// `dsq->nr`.
    pub nr: u32,
    /// The first queued tasks: (pid, comm).
    pub tasks: Vec<(i32, String)>,
    /// Why the task list is missing or cut short.
    pub note: Option<String>,
}

impl<M: GuestMemory + ?Sized> GuestKernel<'_, M> {
    /// Reads the scheduler's state (see the module docs). Never fails as a whole: each part
    /// carries its own error.
    pub fn scheduler_dump(&self, limits: &DumpLimits) -> SchedulerDump {
        let t0 = Instant::now();
        let scheduler = self.scheduler_name();
        let mut sections = Vec::new();
        let mut maps = Vec::new();
        let mut maps_error = None;
        let mut maps_left_out = 0;
        match self.bpf_maps() {
            Ok(all) => {
                maps_left_out = all.len().saturating_sub(limits.maps);
                for m in all.iter().take(limits.maps) {
                    match self.section_dump(m) {
                        Some(s) => sections.push(s),
                        None => maps.push(self.map_dump(m, limits)),
                    }
                }
            }
            Err(e) => maps_error = Some(format!("listing the BPF maps (map_idr): {e}")),
        }
        let dsqs = self.dsq_dumps(limits);
        SchedulerDump {
            scheduler,
            sections,
            maps,
            maps_error,
            maps_left_out,
            dsqs,
            read_time: t0.elapsed(),
        }
    }
}

/// `enum bpf_map_type` names (`include/uapi/linux/bpf.h`), lower case without the prefix.
pub fn map_type_name(t: u32) -> &'static str {
    const NAMES: [&str; 34] = [
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
        "arena",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}
