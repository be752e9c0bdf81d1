//! Loads `ktstr.bpf.o` through libbpf-rs's object API and gives typed access
//! to its live `.bss`: the counters, the control record and the exit record.
//!
//! There is no generated skeleton: the few offsets needed come from the
//! object's own BTF (the `.bss` DATASEC and `struct sched_ext_ops`), which
//! libbpf has fixed up by the time the object is open.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result, bail, ensure};
use libbpf_rs::btf::types::{Composite, DataSec, MemberAttr, Var};
use libbpf_rs::{AsRawLibbpf, Btf, Link, MapCore, Object, ObjectBuilder, OpenObject};

/// The BPF object built by build.rs from `ktstr.bpf.c`.
static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ktstr.bpf.o"));
/// Its copy with a planted verifier-complexity regression (`--planted-complexity`).
static BPF_OBJECT_PLANTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ktstr_planted.bpf.o"));
/// Its copy the verifier rejects (`--planted-reject`).
static BPF_OBJECT_REJECTED: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ktstr_rejected.bpf.o"));

/// Its copy with a BPF arena (`--arena`).
static BPF_OBJECT_ARENA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ktstr_arena.bpf.o"));

/// Which build of the BPF object to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The fixture.
    Plain,
    /// With the planted complexity regression.
    PlantedComplexity,
    /// With the planted rejection.
    PlantedReject,
    /// With a BPF arena, 5 of its pages allocated at init.
    Arena,
}

/// Name of the struct_ops map (the C variable), and so of the object.
const OPS_MAP: &str = "ktstr";

/// `KTSTR_PIN_MAX` of ktstr.bpf.c: entries of `ktstr_pin`.
pub const PIN_MAX: usize = 16;

/// Lengths of `struct ktstr_exit_rec`'s strings in ktstr.bpf.c.
const EXIT_REASON_LEN: usize = 128;
const EXIT_MSG_LEN: usize = 1024;

/// `struct ktstr_exit_rec` of ktstr.bpf.c, byte for byte.
#[repr(C)]
struct RawExitRec {
    kind: i32,
    done: u32,
    exit_code: i64,
    reason: [u8; EXIT_REASON_LEN],
    msg: [u8; EXIT_MSG_LEN],
}

/// Offsets of the `struct ktstr_ctl` fields in ktstr.bpf.c.
const CTL_STALL: usize = 0;
const CTL_CRASH: usize = 4;
const CTL_SLOW_NS: usize = 8;
const CTL_UNFAIR: usize = 16;
const CTL_NO_COUNT: usize = 20;
const CTL_FAIL_INIT: usize = 24;
const CTL_SIZE: usize = 32;
/// Offset of `done` in `struct ktstr_exit_rec`.
const EXIT_DONE: usize = 4;

/// Where the loader's variables sit in `.bss`, and `timeout_ms` in the ops.
#[derive(Debug, Clone, Copy)]
struct Layout {
    pin_n: usize,
    pin: usize,
    nr_enqueued: usize,
    nr_dispatched: usize,
    nr_select_cpu: usize,
    mark: usize,
    race_ns: usize,
    ctl: usize,
    exit_rec: usize,
    timeout_ms: usize,
}

/// The kernel's exit info as `ktstr_exit` recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// `enum scx_exit_kind`.
    pub kind: i32,
    /// `scx_exit_info.exit_code` (set by scx_bpf_exit; 0 otherwise).
    pub exit_code: i64,
    /// The kernel's fixed description of the kind ("runnable task stall").
    pub reason: String,
    /// The detailed message (the scx_bpf_error text, the stalled task).
    pub msg: String,
}

/// The scheduler, loaded but not attached yet.
#[derive(Debug)]
pub struct Loaded {
    object: Object,
    layout: Layout,
}

impl Loaded {
    /// Opens the embedded object (or one of its planted copies), sets the ops' watchdog timeout and loads the programs
    /// into the kernel (the verifier runs here).
    pub fn load(timeout_ms: u32, variant: Variant) -> Result<Self> {
        let mut builder = ObjectBuilder::default();
        builder.name(OPS_MAP).context("naming the BPF object")?;
        let object = match variant {
            Variant::Plain => BPF_OBJECT,
            Variant::PlantedComplexity => BPF_OBJECT_PLANTED,
            Variant::PlantedReject => BPF_OBJECT_REJECTED,
            Variant::Arena => BPF_OBJECT_ARENA,
        };
        let mut open = builder
            .open_memory(object)
            .context("opening the embedded ktstr.bpf.o")?;
        let layout = layout(&open)?;
        let mut ops = open
            .maps_mut()
            .find(|m| m.name() == OPS_MAP)
            .context("the BPF object has no struct_ops map `ktstr`")?;
        let value = ops
            .initial_value_mut()
            .context("the struct_ops map `ktstr` has no initial value")?;
        let field = value
            .get_mut(layout.timeout_ms..layout.timeout_ms + size_of::<u32>())
            .context("sched_ext_ops.timeout_ms lies outside the struct_ops map")?;
        field.copy_from_slice(&timeout_ms.to_ne_bytes());
        let object = open.load().context(
            "loading the scheduler into the kernel (the verifier log is above); \
             needs root and a kernel with CONFIG_SCHED_CLASS_EXT",
        )?;
        Ok(Self { object, layout })
    }

    /// Attaches the struct_ops: from here every fair task is ours.
    pub fn attach(&mut self) -> Result<Link> {
        let mut ops = self
            .object
            .maps_mut()
            .find(|m| m.name() == OPS_MAP)
            .context("the loaded object lost its struct_ops map")?;
        ops.attach_struct_ops().context(
            "attaching the sched_ext ops (is another sched_ext scheduler enabled? \
             see /sys/kernel/sched_ext/state)",
        )
    }

    /// The live `.bss` of the loaded object.
    pub fn bss(&self) -> Result<Bss<'_>> {
        let map = self
            .object
            .maps()
            .find(|m| m.name().as_encoded_bytes().ends_with(b".bss"))
            .context("the loaded object has no .bss map")?;
        let mut len: libbpf_rs::libbpf_sys::size_t = 0;
        // SAFETY: the map pointer comes from a live `Map` of `self.object`;
        // `len` is a valid out-pointer for the size.
        let base = unsafe {
            libbpf_rs::libbpf_sys::bpf_map__initial_value(map.as_libbpf_object().as_ptr(), &mut len)
        };
        let base = NonNull::new(base.cast::<u8>())
            .context(".bss is not memory-mapped (the kernel lacks BPF_F_MMAPABLE?)")?;
        let len = usize::try_from(len).context(".bss size")?;
        let l = self.layout;
        for (what, offset, size, align) in [
            ("nr_enqueued", l.nr_enqueued, 8, 8),
            ("nr_dispatched", l.nr_dispatched, 8, 8),
            ("nr_select_cpu", l.nr_select_cpu, 8, 8),
            ("ktstr_ctl", l.ctl, CTL_SIZE, 8),
            ("ktstr_pin", l.pin, 4 * PIN_MAX, 4),
            ("ktstr_pin_n", l.pin_n, 4, 4),
            ("ktstr_exit_rec", l.exit_rec, size_of::<RawExitRec>(), 8),
        ] {
            ensure!(
                offset % align == 0 && offset + size <= len,
                "{what} at .bss+{offset} ({size} bytes) is misaligned or outside .bss ({len} bytes)"
            );
        }
        Ok(Bss {
            base,
            layout: l,
            _object: PhantomData,
        })
    }
}

/// The live `.bss` of the loaded scheduler, shared with the BPF programs.
#[derive(Debug)]
pub struct Bss<'obj> {
    base: NonNull<u8>,
    layout: Layout,
    _object: PhantomData<&'obj Object>,
}

impl Bss<'_> {
    /// `nr_enqueued`, `nr_dispatched` and `nr_select_cpu`.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.atomic_u64(self.layout.nr_enqueued)
                .load(Ordering::Relaxed),
            self.atomic_u64(self.layout.nr_dispatched)
                .load(Ordering::Relaxed),
            self.atomic_u64(self.layout.nr_select_cpu)
                .load(Ordering::Relaxed),
        )
    }

    /// Makes ktstr_dispatch stop moving tasks (the watchdog will eject us).
    pub fn request_stall(&self) {
        self.atomic_u32(self.layout.ctl + CTL_STALL)
            .store(1, Ordering::Relaxed);
    }

    /// Makes the next callback call scx_bpf_error().
    pub fn request_crash(&self) {
        self.atomic_u32(self.layout.ctl + CTL_CRASH)
            .store(1, Ordering::Relaxed);
    }

    /// Makes ktstr_dispatch spin `ns` before each pull (capped in BPF).
    pub fn set_slow_ns(&self, ns: u64) {
        self.atomic_u64(self.layout.ctl + CTL_SLOW_NS)
            .store(ns, Ordering::Relaxed);
    }

    /// Plants the fairness bug: odd pids get 8 ms slices, even pids 2 ms.
    pub fn set_unfair(&self) {
        self.atomic_u32(self.layout.ctl + CTL_UNFAIR)
            .store(1, Ordering::Relaxed);
    }

    /// Makes ktstr_dispatch stop counting its dispatches (it still dispatches).
    pub fn set_no_count(&self) {
        self.atomic_u32(self.layout.ctl + CTL_NO_COUNT)
            .store(1, Ordering::Relaxed);
    }

    /// Makes ktstr_init fail (set before attaching).
    pub fn set_fail_init(&self) {
        self.atomic_u32(self.layout.ctl + CTL_FAIL_INIT)
            .store(1, Ordering::Relaxed);
    }

    /// Keeps every user task with pid P on CPU `cpus[P % len]` (at most
    /// [`PIN_MAX`] entries; the loader checked them).
    pub fn set_pin(&self, cpus: &[u32]) {
        for (i, &c) in cpus.iter().take(PIN_MAX).enumerate() {
            self.atomic_u32(self.layout.pin + 4 * i)
                .store(c, Ordering::Relaxed);
        }
        self.atomic_u32(self.layout.pin_n)
            .store(cpus.len().min(PIN_MAX) as u32, Ordering::Release);
    }

    /// Arms the planted race: two CPUs enqueueing within `ns` of each
    /// other make the scheduler error out.
    pub fn set_race_ns(&self, ns: u64) {
        self.atomic_u64(self.layout.race_ns)
            .store(ns, Ordering::Release);
    }

    /// Writes `ktstr_mark`, which nothing else reads or writes.
    pub fn set_mark(&self, v: u64) {
        self.atomic_u64(self.layout.mark)
            .store(v, Ordering::Relaxed);
    }

    /// The exit record, once ktstr_exit has written it.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        let rec = self.layout.exit_rec;
        if self.atomic_u32(rec + EXIT_DONE).load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut bytes = [0u8; size_of::<RawExitRec>()];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: `bss()` checked that the record lies inside the mapping,
            // which lives as long as the object this borrows. BPF no longer
            // writes it once `done` is set; volatile reads keep the compiler
            // from assuming it never changes.
            *byte = unsafe { self.base.as_ptr().add(rec + i).read_volatile() };
        }
        Some(parse_exit_rec(&bytes))
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `bss()` checked that `offset` is 8-aligned and inside the
        // mapping (page-aligned base), which lives as long as the object this
        // borrows; BPF updates these words with atomic instructions only.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as for `atomic_u64`: `offset` is a 4-aligned field of a
        // record `bss()` checked to be 8-aligned and inside the mapping.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }
}

/// Decodes a `struct ktstr_exit_rec` (native endian, C layout).
fn parse_exit_rec(bytes: &[u8; size_of::<RawExitRec>()]) -> ExitInfo {
    let kind = i32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let exit_code = i64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let reason = c_string(&bytes[16..16 + EXIT_REASON_LEN]);
    let msg = c_string(&bytes[16 + EXIT_REASON_LEN..]);
    ExitInfo {
        kind,
        exit_code,
        reason,
        msg,
    }
}

/// The NUL-terminated text at the start of `bytes`, lossily as UTF-8.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Reads the variable offsets and `sched_ext_ops.timeout_ms` from the BTF of
/// the opened object (libbpf has filled in the DATASEC offsets by then).
fn layout(open: &OpenObject) -> Result<Layout> {
    // SAFETY: the pointer comes from a live `OpenObject`, borrowed for as
    // long as the returned reference (and the `Btf` built from it) is used.
    let raw = unsafe { open.as_libbpf_object().as_ref() };
    let btf = Btf::from_bpf_object(raw)
        .context("reading the BTF of ktstr.bpf.o")?
        .context("ktstr.bpf.o has no BTF (build it with -g)")?;

    let bss: DataSec<'_> = btf
        .type_by_name(".bss")
        .context("ktstr.bpf.o has no .bss DATASEC")?;
    let mut vars = HashMap::new();
    for info in bss.iter() {
        let var: Var<'_> = btf
            .type_by_id(info.ty)
            .context("a .bss DATASEC entry is not a VAR")?;
        if let Some(name) = var.name().and_then(|n| n.to_str()) {
            vars.insert(name.to_owned(), (info.offset as usize, info.size));
        }
    }
    let var = |name: &str, size: usize| -> Result<usize> {
        let &(offset, actual) = vars
            .get(name)
            .with_context(|| format!("ktstr.bpf.o has no .bss variable {name}"))?;
        ensure!(
            actual == size,
            "{name} is {actual} bytes in ktstr.bpf.o but the loader expects {size}"
        );
        Ok(offset)
    };

    let ops: Composite<'_> = btf
        .type_by_name("sched_ext_ops")
        .context("ktstr.bpf.o has no struct sched_ext_ops")?;
    let mut timeout_ms = None;
    for member in ops.iter() {
        if member.name.and_then(|n| n.to_str()) == Some("timeout_ms") {
            match member.attr {
                MemberAttr::Normal { offset } if offset % 8 == 0 => {
                    timeout_ms = Some(offset as usize / 8);
                }
                other => bail!("sched_ext_ops.timeout_ms has an unexpected layout: {other:?}"),
            }
        }
    }

    Ok(Layout {
        pin_n: var("ktstr_pin_n", 4)?,
        pin: var("ktstr_pin", 4 * PIN_MAX)?,
        nr_enqueued: var("nr_enqueued", 8)?,
        nr_dispatched: var("nr_dispatched", 8)?,
        nr_select_cpu: var("nr_select_cpu", 8)?,
        mark: var("ktstr_mark", 8)?,
        race_ns: var("ktstr_race_ns", 8)?,
        ctl: var("ktstr_ctl", CTL_SIZE)?,
        exit_rec: var("ktstr_exit_rec", size_of::<RawExitRec>())?,
        timeout_ms: timeout_ms.context("struct sched_ext_ops has no timeout_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_record_decodes_kind_code_and_strings() {
        let mut bytes = [0u8; size_of::<RawExitRec>()];
        bytes[0..4].copy_from_slice(&1026i32.to_ne_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_ne_bytes());
        bytes[8..16].copy_from_slice(&(-3i64).to_ne_bytes());
        bytes[16..35].copy_from_slice(b"runnable task stall");
        let msg = b"kworker/0:1[12] failed to run for 3.1s";
        bytes[16 + EXIT_REASON_LEN..16 + EXIT_REASON_LEN + msg.len()].copy_from_slice(msg);
        let info = parse_exit_rec(&bytes);
        assert_eq!(
            info,
            ExitInfo {
                kind: 1026,
                exit_code: -3,
                reason: "runnable task stall".into(),
                msg: String::from_utf8_lossy(msg).into_owned(),
            }
        );
    }

    #[test]
    fn exit_record_layout_matches_the_c_struct() {
        assert_eq!(size_of::<RawExitRec>(), 16 + EXIT_REASON_LEN + EXIT_MSG_LEN);
        assert_eq!(std::mem::offset_of!(RawExitRec, done), EXIT_DONE);
        assert_eq!(std::mem::offset_of!(RawExitRec, reason), 16);
    }

    #[test]
    fn unterminated_string_is_taken_whole() {
        assert_eq!(c_string(b"abc"), "abc");
        assert_eq!(c_string(b"ab\0c"), "ab");
    }

    #[test]
    fn embedded_object_has_the_loader_variables() {
        let mut builder = ObjectBuilder::default();
        let open = builder.open_memory(BPF_OBJECT).expect("the object opens");
        let layout = layout(&open).expect("the loader finds its variables");
        let mut offsets = [
            layout.nr_enqueued,
            layout.nr_dispatched,
            layout.nr_select_cpu,
            layout.ctl,
            layout.exit_rec,
        ];
        offsets.sort_unstable();
        assert!(offsets.windows(2).all(|w| w[0] != w[1]), "{layout:?}");
    }
}
