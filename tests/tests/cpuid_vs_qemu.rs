//! CPUID against an independent source: the topology leaves QEMU presents to a
//! TCG guest (`-cpu Nehalem,level=0x20`) must equal the ones
//! `ktstr_topology::cpuid::apply_topology` synthesizes for the own VMM, field by
//! field, for the topology-bearing bits only.
//!
//! The same hands wrote the topology crate's encoder and its Linux-style decoder,
//! so its unit tests can agree with themselves and still both be wrong. Here the
//! reference is QEMU's encoder: in the guest, the body pins itself to each CPU in
//! turn, reads the raw leaves, then builds our leaves for the same CPU on top of
//! those raw leaves (so every non-topology bit is QEMU's and only topology bits
//! can differ) and compares:
//!
//! - leaf 0x1: EBX[31:24] initial APIC id, EBX[23:16] addressable ids per
//!   package, EDX[28] HTT;
//! - leaf 0x4, per cache subleaf: EAX[4:0] type, EAX[7:5] level, EAX[25:14] ids
//!   sharing the cache, EAX[31:26] core ids per package;
//! - leaves 0xB and 0x1F, per subleaf up to and including the invalid one:
//!   EAX[4:0] shift, EBX[15:0] logical processors, ECX[15:8] level type, EDX
//!   x2APIC id;
//! - and, as a summary, what Linux derives from either set
//!   (`cpuid::linux_view`: APIC id, package, die, core, thread, LLC id).
//!
//! Two differences are encoding choices that Linux decodes identically, so there
//! the test compares what Linux uses instead of the raw field:
//!
//! - leaf 0x1 EBX[23:16]: QEMU 10 puts the number of logical processors present
//!   in the package (6 for three dies of two cores), we put the addressable ids
//!   (8, the next power of two). The SDM names the field "maximum number of
//!   addressable IDs" and says its next power of two is the number of APIC ids
//!   reserved per package; Intel's topology enumeration guide adds that it may
//!   differ from the processors present. Linux keeps only
//!   `get_count_order(EBX[23:16])` (topology_common.c, `ebx1_nproc_shift`), so
//!   the order is compared, and an equal-order difference is noted.
//! - With one LLC per node QEMU has no die level, so it leaves 0x1F all zero
//!   (only CPUs with levels above core need it), while we always fill 0x1F with
//!   the same levels as 0xB. Linux reads 0x1F when its subleaf 0 is valid and
//!   0xB otherwise (arch/x86/kernel/cpu/topology_ext.c), so there the leaf Linux
//!   reads from QEMU (0xB) is compared with the one it reads from us (0x1F),
//!   field by field.

use std::fmt::Write as _;

use core::arch::x86_64::__cpuid_count;

use ktstr::prelude::*;
use ktstr::topology::Topology;
use ktstr_topology::cpuid::{CpuidEntry, apply_topology, linux_view};

/// Leaves read from the guest (Intel SDM vol. 2A, CPUID).
const LEAF_MAX: u32 = 0x0;
const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
/// Extended leaves `apply_topology` may rewrite; read so it starts from what
/// the guest has, not compared.
const EXT_LEAVES: [u32; 4] = [0x8000_0000, 0x8000_0001, 0x8000_0006, 0x8000_0008];

/// Stops a subleaf walk that never reaches its terminator (no real CPU has
/// this many caches or topology levels).
const MAX_SUBLEAVES: u32 = 16;

fn cpuid(leaf: u32, subleaf: u32) -> CpuidEntry {
    let r = __cpuid_count(leaf, subleaf);
    CpuidEntry::subleaf(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx)
}

/// Subleaves 0, 1, ... from `get` up to and including the first that `ends`.
fn walk_by(get: impl Fn(u32) -> CpuidEntry, ends: fn(&CpuidEntry) -> bool) -> Vec<CpuidEntry> {
    let mut out = Vec::new();
    for n in 0..MAX_SUBLEAVES {
        let e = get(n);
        out.push(e);
        if ends(&e) {
            break;
        }
    }
    out
}

/// The live subleaves of `leaf`, up to and including the first that `ends`.
fn subleaves(leaf: u32, ends: fn(&CpuidEntry) -> bool) -> Vec<CpuidEntry> {
    walk_by(|n| cpuid(leaf, n), ends)
}

/// Leaf 4 ends at cache type 0 (EAX[4:0]).
fn cache_ends(e: &CpuidEntry) -> bool {
    e.eax & 0x1f == 0
}

/// Leaves 0xB/0x1F end at level type 0 (ECX[15:8]).
fn level_ends(e: &CpuidEntry) -> bool {
    (e.ecx >> 8) & 0xff == 0
}

/// The raw leaves of the CPU this thread runs on.
fn read_leaves() -> Vec<CpuidEntry> {
    let leaf0 = cpuid(LEAF_MAX, 0);
    let max = leaf0.eax;
    // Leaves 0 and 1 do not take a subleaf: store them as KVM would.
    let plain = |e: CpuidEntry| CpuidEntry::leaf(e.function, e.eax, e.ebx, e.ecx, e.edx);
    let mut out = vec![plain(leaf0), plain(cpuid(LEAF_FEATURES, 0))];
    out.extend(subleaves(LEAF_CACHE, cache_ends));
    out.extend(subleaves(LEAF_TOPOLOGY, level_ends));
    if max >= LEAF_TOPOLOGY_V2 {
        out.extend(subleaves(LEAF_TOPOLOGY_V2, level_ends));
    }
    let ext_max = cpuid(EXT_LEAVES[0], 0).eax;
    out.extend(
        EXT_LEAVES
            .iter()
            .filter(|&&l| l <= ext_max)
            .map(|&l| plain(cpuid(l, 0))),
    );
    out
}

/// Runs `read_leaves` on CPU `cpu`, in a thread pinned there.
fn leaves_on(cpu: u32) -> Result<Vec<CpuidEntry>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu)?;
            // SAFETY: sched_getcpu takes no arguments and only reads the
            // calling thread's CPU.
            let on = unsafe { libc::sched_getcpu() };
            anyhow::ensure!(on == cpu as i32, "pinned to cpu {cpu}, but running on {on}");
            Ok(read_leaves())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("cpuid reader for cpu {cpu} panicked"))?
    })
}

/// Binds the calling thread to one CPU.
fn pin_to(cpu: u32) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    anyhow::ensure!(
        (cpu as usize) < libc::CPU_SETSIZE as usize,
        "cpu {cpu} is past CPU_SETSIZE"
    );
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit is inside
    // `set`.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the
    // size passed, alive for the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        anyhow::bail!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A register of a CPUID entry.
#[derive(Clone, Copy)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// A bit field compared: name, register, lowest and highest bit.
type Field = (&'static str, Reg, u32, u32);

const LEAF1_FIELDS: [Field; 2] = [
    ("EBX[31:24] initial APIC id", Reg::Ebx, 24, 31),
    ("EDX[28] HTT", Reg::Edx, 28, 28),
];

const LEAF4_FIELDS: [Field; 4] = [
    ("EAX[4:0] cache type", Reg::Eax, 0, 4),
    ("EAX[7:5] cache level", Reg::Eax, 5, 7),
    ("EAX[25:14] ids sharing", Reg::Eax, 14, 25),
    ("EAX[31:26] cores per package", Reg::Eax, 26, 31),
];

const LEVEL_FIELDS: [Field; 4] = [
    ("EAX[4:0] shift", Reg::Eax, 0, 4),
    ("EBX[15:0] count", Reg::Ebx, 0, 15),
    ("ECX[15:8] level type", Reg::Ecx, 8, 15),
    ("EDX x2APIC id", Reg::Edx, 0, 31),
];

fn bits(e: &CpuidEntry, reg: Reg, low: u32, high: u32) -> u32 {
    let value = match reg {
        Reg::Eax => e.eax,
        Reg::Ebx => e.ebx,
        Reg::Ecx => e.ecx,
        Reg::Edx => e.edx,
    };
    (value >> low) & (u32::MAX >> (31 - (high - low)))
}

/// Collects the differences of one CPU's leaves, one line each.
struct Diff<'a> {
    cpu: u32,
    out: &'a mut String,
    notes: &'a mut Vec<String>,
    compared: usize,
}

impl Diff<'_> {
    /// Compares one value; `leaf` and `subleaf` (None for leaves without one)
    /// name where it came from.
    fn value(&mut self, leaf: u32, subleaf: Option<u32>, name: &str, qemu: u32, ours: u32) {
        self.compared += 1;
        if qemu != ours {
            let sub = subleaf.map_or(String::new(), |s| format!(" subleaf {s}"));
            let _ = writeln!(
                self.out,
                "cpu {} leaf {leaf:#x}{sub} {name}: QEMU {qemu:#x}, ours {ours:#x}",
                self.cpu
            );
        }
    }

    /// Compares `fields` of QEMU's entry `q` and our entry `o`, reported as
    /// `leaf` (and `subleaf`).
    fn fields(
        &mut self,
        leaf: u32,
        subleaf: Option<u32>,
        fields: &[Field],
        q: &CpuidEntry,
        o: &CpuidEntry,
    ) {
        for &(name, reg, low, high) in fields {
            self.value(
                leaf,
                subleaf,
                name,
                bits(q, reg, low, high),
                bits(o, reg, low, high),
            );
        }
    }

    /// Compares two subleaf walks of `leaf` field by field; `what` names them.
    fn walks(
        &mut self,
        leaf: u32,
        what: &str,
        fields: &[Field],
        q: &[CpuidEntry],
        o: &[CpuidEntry],
    ) {
        if q.len() != o.len() {
            self.mismatch(format!(
                "{what} subleaves: QEMU {}, ours {}",
                q.len(),
                o.len()
            ));
        }
        for (q, o) in q.iter().zip(o) {
            self.fields(leaf, Some(q.index), fields, q, o);
        }
    }

    fn mismatch(&mut self, what: String) {
        let _ = writeln!(self.out, "cpu {} {what}", self.cpu);
    }

    /// A note for the verdict, once per test.
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

fn find(entries: &[CpuidEntry], leaf: u32, subleaf: u32) -> Option<CpuidEntry> {
    entries
        .iter()
        .find(|e| e.function == leaf && e.index == subleaf)
        .copied()
}

/// Subleaves of `leaf` up to and including the first that `ends`, from a set of
/// entries. A subleaf missing from the set reads as zeroes, as KVM answers for
/// a leaf in range that its table lacks (arch/x86/kvm/cpuid.c, `kvm_cpuid`):
/// `apply_topology` leaves out the terminating subleaf of leaf 4.
fn walk(entries: &[CpuidEntry], leaf: u32, ends: fn(&CpuidEntry) -> bool) -> Vec<CpuidEntry> {
    walk_by(
        |n| find(entries, leaf, n).unwrap_or(CpuidEntry::subleaf(leaf, n, 0, 0, 0, 0)),
        ends,
    )
}

/// Whether Linux takes the levels from this 0xB/0x1F leaf: its subleaf 0 has
/// logical processors and a level type (topology_ext.c, `parse_topology_leaf`).
fn usable(levels: &[CpuidEntry]) -> bool {
    levels
        .first()
        .is_some_and(|e| e.ebx & 0xffff != 0 && !level_ends(e))
}

/// Linux's `get_count_order`: ceil(log2(n)), 0 for 0 and 1.
fn count_order(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - (n - 1).leading_zeros()
    }
}

fn compare_leaf1(d: &mut Diff, qemu: &[CpuidEntry], ours: &[CpuidEntry]) {
    let (Some(q), Some(o)) = (find(qemu, LEAF_FEATURES, 0), find(ours, LEAF_FEATURES, 0)) else {
        d.mismatch("leaf 0x1 missing".into());
        return;
    };
    d.fields(LEAF_FEATURES, None, &LEAF1_FIELDS, &q, &o);
    // Encoding choice (see the module docs): compare the order, which is all
    // Linux takes from this field.
    let (q_ids, o_ids) = (bits(&q, Reg::Ebx, 16, 23), bits(&o, Reg::Ebx, 16, 23));
    d.value(
        LEAF_FEATURES,
        None,
        "order of EBX[23:16] addressable ids",
        count_order(q_ids),
        count_order(o_ids),
    );
    if q_ids != o_ids && count_order(q_ids) == count_order(o_ids) {
        d.note(format!(
            "leaf 0x1 EBX[23:16]: QEMU {q_ids}, ours {o_ids}, the same power of two"
        ));
    }
}

fn compare_leaf4(d: &mut Diff, qemu: &[CpuidEntry], ours: &[CpuidEntry]) {
    let q = walk(qemu, LEAF_CACHE, cache_ends);
    let o = walk(ours, LEAF_CACHE, cache_ends);
    d.walks(LEAF_CACHE, "leaf 0x4", &LEAF4_FIELDS, &q, &o);
}

/// Compares 0xB with 0xB, and 0x1F with what Linux reads in its place.
fn compare_topology_leaves(d: &mut Diff, qemu: &[CpuidEntry], ours: &[CpuidEntry]) {
    let q_b = walk(qemu, LEAF_TOPOLOGY, level_ends);
    let o_b = walk(ours, LEAF_TOPOLOGY, level_ends);
    d.walks(LEAF_TOPOLOGY, "leaf 0xb", &LEVEL_FIELDS, &q_b, &o_b);

    let q_1f = walk(qemu, LEAF_TOPOLOGY_V2, level_ends);
    let o_1f = walk(ours, LEAF_TOPOLOGY_V2, level_ends);
    match (usable(&q_1f), usable(&o_1f)) {
        (true, true) => d.walks(LEAF_TOPOLOGY_V2, "leaf 0x1f", &LEVEL_FIELDS, &q_1f, &o_1f),
        (false, true) => {
            // Encoding choice (see the module docs): Linux reads QEMU's 0xB and
            // our 0x1F; those must agree.
            d.note("QEMU leaves 0x1F empty: its 0xB compared with our 0x1F".into());
            let what = "QEMU's leaf 0xb vs our leaf 0x1f";
            d.walks(LEAF_TOPOLOGY_V2, what, &LEVEL_FIELDS, &q_b, &o_1f);
        }
        (true, false) => d.mismatch("leaf 0x1f: QEMU has levels, ours has none".into()),
        (false, false) => d.mismatch("leaf 0x1f: neither has levels".into()),
    }
}

/// What Linux makes of either set of leaves.
fn compare_linux_view(d: &mut Diff, qemu: &[CpuidEntry], ours: &[CpuidEntry]) {
    match (linux_view(qemu), linux_view(ours)) {
        (Ok(q), Ok(o)) => {
            let q = (q.apic_id, q.package, q.die, q.core, q.thread, q.llc_id);
            let o = (o.apic_id, o.package, o.die, o.core, o.thread, o.llc_id);
            d.compared += 1;
            if q != o {
                d.mismatch(format!(
                    "Linux's view (apic, package, die, core, thread, llc): QEMU {q:?}, ours {o:?}"
                ));
            }
        }
        (q, o) => d.mismatch(format!(
            "Linux's view: QEMU {:?}, ours {:?}",
            q.err(),
            o.err()
        )),
    }
}

fn compare_with_qemu(ctx: &Ctx) -> Result<AssertResult> {
    let topo: &Topology = &ctx.topology;
    let mut wrong = String::new();
    let mut notes = Vec::new();
    let mut compared = 0;
    for cpu in 0..topo.nr_cpus() {
        let qemu = leaves_on(cpu)?;
        let mut ours = qemu.clone();
        apply_topology(&mut ours, topo, cpu)?;
        let mut d = Diff {
            cpu,
            out: &mut wrong,
            notes: &mut notes,
            compared: 0,
        };
        compare_leaf1(&mut d, &qemu, &ours);
        compare_leaf4(&mut d, &qemu, &ours);
        compare_topology_leaves(&mut d, &qemu, &ours);
        compare_linux_view(&mut d, &qemu, &ours);
        compared += d.compared;
    }
    if !wrong.is_empty() {
        return Ok(AssertResult::fail("cpuid", format!("{topo}:\n{wrong}")));
    }
    let mut r = AssertResult::pass().note(
        "cpuid",
        format!(
            "{topo}: {compared} fields over {} CPUs match QEMU",
            topo.nr_cpus()
        ),
    );
    for n in notes {
        r = r.note("cpuid", n);
    }
    Ok(r)
}

/// Two LLCs (QEMU dies) in one socket, with SMT: 0x1F has a die level.
#[ktstr_test(numa_nodes = 1, llcs = 2, cores = 2, threads = 2, duration_s = 1)]
fn cpuid_vs_qemu_1n2l2c2t(ctx: &Ctx) -> Result<AssertResult> {
    compare_with_qemu(ctx)
}

/// Two packages with two dies each.
#[ktstr_test(
    numa_nodes = 2,
    llcs = 4,
    cores = 2,
    threads = 1,
    memory_mib = 1024,
    duration_s = 1
)]
fn cpuid_vs_qemu_2n4l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    compare_with_qemu(ctx)
}

/// Three dies: counts that are not powers of two.
#[ktstr_test(numa_nodes = 1, llcs = 3, cores = 2, threads = 1, duration_s = 1)]
fn cpuid_vs_qemu_1n3l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    compare_with_qemu(ctx)
}

/// One LLC: no die level, QEMU leaves 0x1F empty.
#[ktstr_test(numa_nodes = 1, llcs = 1, cores = 4, threads = 2, duration_s = 1)]
fn cpuid_vs_qemu_1n1l4c2t(ctx: &Ctx) -> Result<AssertResult> {
    compare_with_qemu(ctx)
}
