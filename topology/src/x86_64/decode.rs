//! Reading topology back out of CPUID leaves the way Linux does, to check what a
//! guest will make of the synthesized leaves (and, with the QEMU backend, of
//! QEMU's).
//!
//! Follows arch/x86/kernel/cpu/topology_ext.c (leaf 0x1F, else 0xB: each level's
//! shift applies to its domain and every domain above it), topology_amd.c (those
//! leaves only with TOPOEXT; 0x8000001E's node id) and cacheinfo.c (the LLC id is
//! the APIC id shifted right by the order of the LLC's sharing count, from leaf 4
//! on Intel and from the last 0x8000001D subleaf on AMD family 17h model 0x20 and
//! later; the node id before family 17h; APIC id bits 3+ on Zen 1 and Hygon).

use crate::apic::bits_for;
use crate::x86_64::cpuid::{CpuidEntry, LEVEL_CORE, LEVEL_DIE, LEVEL_SMT, Vendor, vendor};

/// What Linux in the guest derives from one CPU's leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinuxView {
    /// Initial APIC id (leaf 0x1F/0xB EDX).
    pub apic_id: u32,
    /// Package id (`topology/physical_package_id`).
    pub package: u32,
    /// Die id within the package (`topology/die_id`).
    pub die: u32,
    /// Core id within the die.
    pub core: u32,
    /// SMT thread id within the core.
    pub thread: u32,
    /// LLC id (`cpu_llc_id`): CPUs with the same id share an LLC.
    pub llc_id: Option<u32>,
    /// The leaf the levels came from: 0x1F or 0xB.
    pub topology_leaf: u32,
}

/// Why the leaves say nothing Linux could use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No leaf 0.
    #[error("cpuid has no leaf 0")]
    NoLeafZero,
    /// AMD without TopologyExtensions: Linux ignores 0xB/0x1F.
    #[error("cpuid is AMD without TOPOEXT, so Linux ignores leaves 0xB and 0x1F")]
    NoTopoext,
    /// Neither 0x1F nor 0xB has a valid subleaf 0.
    #[error("cpuid has no valid leaf 0x1F or 0xB")]
    NoTopologyLeaf,
}

/// Linux's topology domains (arch/x86/include/asm/topology.h order).
const SMT: usize = 0;
const CORE: usize = 1;
const MODULE: usize = 2;
const TILE: usize = 3;
const DIE: usize = 4;
const DIEGRP: usize = 5;
const DOMAINS: usize = 7;

fn find(entries: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    entries.iter().find(|e| {
        e.function == function
            && (e.flags & super::cpuid::CPUID_FLAG_SIGNIFICANT_INDEX == 0 || e.index == index)
    })
}

fn regs(entries: &[CpuidEntry], function: u32, index: u32) -> [u32; 4] {
    find(entries, function, index).map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// Walks the subleaves of 0x1F or 0xB: per-domain shifts and the x2APIC id.
fn parse_levels(entries: &[CpuidEntry], leaf: u32) -> Option<([u32; DOMAINS], u32)> {
    let max_type = if leaf == 0xb { 3 } else { 7 };
    let mut shifts = [0u32; DOMAINS];
    let mut apic = None;
    let mut last = SMT;
    for subleaf in 0.. {
        let [eax, ebx, ecx, edx] = regs(entries, leaf, subleaf);
        let kind = (ecx >> 8) & 0xff;
        if ebx & 0xffff == 0 || kind == 0 {
            break;
        }
        let dom = if kind >= max_type {
            last + 1
        } else {
            match kind {
                LEVEL_SMT => SMT,
                LEVEL_CORE => CORE,
                3 => MODULE,
                4 => TILE,
                LEVEL_DIE => DIE,
                _ => DIEGRP,
            }
        };
        last = dom;
        apic.get_or_insert(edx);
        for s in shifts.iter_mut().skip(dom) {
            *s = eax & 0x1f;
        }
    }
    apic.map(|apic| (shifts, apic))
}

fn family_model(entries: &[CpuidEntry]) -> (u32, u32) {
    let eax = regs(entries, 1, 0)[0];
    let base_family = (eax >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family >= 0x6 {
        ((eax >> 4) & 0xf) | (((eax >> 16) & 0xf) << 4)
    } else {
        (eax >> 4) & 0xf
    };
    (family, model)
}

/// APIC id shifted by the order of the sharing count of the last cache subleaf of
/// `leaf` (4 or 0x8000001D) whose level is the highest.
fn llc_from_cache_leaf(entries: &[CpuidEntry], leaf: u32, apic: u32) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None; // (level, sharing)
    for subleaf in 0.. {
        let eax = regs(entries, leaf, subleaf)[0];
        if eax & 0x1f == 0 {
            break;
        }
        let level = (eax >> 5) & 0x7;
        let sharing = ((eax >> 14) & 0xfff) + 1;
        if best.is_none_or(|(l, _)| level >= l) {
            best = Some((level, sharing));
        }
    }
    best.map(|(_, sharing)| apic >> bits_for(sharing))
}

/// What Linux derives from one vCPU's leaves.
pub fn linux_view(entries: &[CpuidEntry]) -> Result<LinuxView, DecodeError> {
    let vendor = vendor(entries).ok_or(DecodeError::NoLeafZero)?;
    let amd = matches!(vendor, Vendor::Amd | Vendor::Hygon);
    if amd && regs(entries, 0x8000_0001, 0)[2] & (1 << 22) == 0 {
        return Err(DecodeError::NoTopoext);
    }
    let max = regs(entries, 0, 0)[0];
    let (topology_leaf, (shifts, apic)) = [0x1f, 0xb]
        .into_iter()
        .filter(|leaf| max >= *leaf)
        .find_map(|leaf| parse_levels(entries, leaf).map(|p| (leaf, p)))
        .ok_or(DecodeError::NoTopologyLeaf)?;
    let field = |low: u32, high: u32| (apic >> low) & ((1u32 << (high - low)) - 1);

    let llc_id = if amd {
        let (family, model) = family_model(entries);
        if regs(entries, 0x8000_0006, 0)[3] == 0 {
            None
        } else if vendor == Vendor::Hygon || (family == 0x17 && model <= 0x1f) {
            Some(apic >> 3)
        } else if family < 0x17 {
            Some(regs(entries, 0x8000_001e, 0)[2] & 0xff)
        } else {
            llc_from_cache_leaf(entries, 0x8000_001d, apic)
        }
    } else {
        llc_from_cache_leaf(entries, 4, apic)
    };

    Ok(LinuxView {
        apic_id: apic,
        package: apic >> shifts[DIEGRP],
        die: field(shifts[TILE], shifts[DIE]),
        core: field(shifts[SMT], shifts[CORE]),
        thread: field(0, shifts[SMT]),
        llc_id,
        topology_leaf,
    })
}
