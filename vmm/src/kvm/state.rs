//! The KVM state of a machine that a snapshot keeps: per vCPU (read on the
//! vCPU's own thread while it is parked) and per VM (irqchip, PIT, clock),
//! and its encoding as tagged records for the image.
//!
//! Orders follow the KVM API's rules (Documentation/virt/kvm/api.rst) and
//! what other VMMs found: the MP state is read first (reading it lets the
//! LAPIC accept pending INIT/SIPI, which changes the rest); a pending port
//! or MMIO read is completed by one `KVM_RUN` with `immediate_exit` before
//! anything is read (its result lands in the registers only then); the
//! vCPU events are read last. On restore the LAPIC goes in after the
//! special registers (the APIC base), the MSRs after the LAPIC (the TSC
//! deadline needs its timer mode), the events last.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, Msrs, kvm_clock_data,
    kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};

use crate::{KvmStateError, VmmError};

/// A KVM structure as its bytes: the zerocopy impls that `kvm-bindings`' `serde` feature
/// derives for every state structure but `kvm_fpu` (which has neither those nor serde impls
/// in kvm-bindings 0.14), and for `kvm_fpu` its fields written out one by one in the same
/// `repr(C)` layout. The image keeps the bytes in tagged, size-checked records rather than
/// serde's output: the same bytes, and a mismatch is named by tag and size.
trait KvmBytes: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_kvm_bytes(b: &[u8]) -> Option<Self>;
}

impl<T: zerocopy::IntoBytes + zerocopy::FromBytes + zerocopy::Immutable> KvmBytes for T {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_kvm_bytes(b: &[u8]) -> Option<Self> {
        T::read_from_bytes(b).ok()
    }
}

/// `struct kvm_fpu` (arch/x86/include/uapi/asm/kvm.h), 416 bytes, as `repr(C)` lays it out.
const FPU_LEN: usize = 416;

fn fpu_bytes(f: &kvm_fpu) -> Vec<u8> {
    let mut b = Vec::with_capacity(FPU_LEN);
    f.fpr.iter().for_each(|r| b.extend_from_slice(r));
    b.extend_from_slice(&f.fcw.to_le_bytes());
    b.extend_from_slice(&f.fsw.to_le_bytes());
    b.extend_from_slice(&[f.ftwx, f.pad1]);
    b.extend_from_slice(&f.last_opcode.to_le_bytes());
    b.extend_from_slice(&f.last_ip.to_le_bytes());
    b.extend_from_slice(&f.last_dp.to_le_bytes());
    f.xmm.iter().for_each(|r| b.extend_from_slice(r));
    b.extend_from_slice(&f.mxcsr.to_le_bytes());
    b.extend_from_slice(&f.pad2.to_le_bytes());
    b
}

fn fpu_from(b: &[u8]) -> Option<kvm_fpu> {
    if b.len() != FPU_LEN {
        return None;
    }
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    let mut f = kvm_fpu::default();
    for r in &mut f.fpr {
        r.copy_from_slice(take(16));
    }
    f.fcw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.fsw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.ftwx = take(1)[0];
    f.pad1 = take(1)[0];
    f.last_opcode = u16::from_le_bytes(take(2).try_into().ok()?);
    f.last_ip = u64::from_le_bytes(take(8).try_into().ok()?);
    f.last_dp = u64::from_le_bytes(take(8).try_into().ok()?);
    for r in &mut f.xmm {
        r.copy_from_slice(take(16));
    }
    f.mxcsr = u32::from_le_bytes(take(4).try_into().ok()?);
    f.pad2 = u32::from_le_bytes(take(4).try_into().ok()?);
    Some(f)
}

/// Appends tagged records: tag, length, bytes.
#[derive(Default)]
pub(crate) struct Records(pub(crate) Vec<u8>);

impl Records {
    pub(crate) fn raw(&mut self, tag: u32, bytes: &[u8]) {
        self.0.extend_from_slice(&tag.to_le_bytes());
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn pod<T: KvmBytes>(&mut self, tag: u32, v: &T) {
        self.raw(tag, &v.to_bytes());
    }
    /// An absent value is an empty record.
    fn opt<T: KvmBytes>(&mut self, tag: u32, v: Option<&T>) {
        self.raw(tag, &v.map(KvmBytes::to_bytes).unwrap_or_default());
    }
}

/// Reads the records [`Records`] wrote, in order.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }
    pub(crate) fn raw(&mut self, tag: u32) -> Result<&'a [u8], KvmStateError> {
        let head = self.rest.get(..8).ok_or(KvmStateError::Truncated { tag })?;
        let got = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if got != tag {
            return Err(KvmStateError::WrongTag { tag, found: got });
        }
        let body = self
            .rest
            .get(8..8 + len)
            .ok_or(KvmStateError::CutShort { tag })?;
        self.rest = &self.rest[8 + len..];
        Ok(body)
    }
    fn pod<T: KvmBytes>(&mut self, tag: u32) -> Result<T, KvmStateError> {
        let b = self.raw(tag)?;
        T::from_kvm_bytes(b).ok_or(KvmStateError::WrongSize {
            tag,
            len: b.len(),
            want: std::mem::size_of::<T>(),
        })
    }
    fn opt<T: KvmBytes>(&mut self, tag: u32) -> Result<Option<T>, KvmStateError> {
        if self.rest.get(4..8) == Some(&[0, 0, 0, 0][..]) {
            self.raw(tag)?;
            return Ok(None);
        }
        self.pod(tag).map(Some)
    }
}

// Record tags of a vCPU's state, then the VM's.
const T_MP: u32 = 0x100;
const T_REGS: u32 = 0x101;
const T_SREGS: u32 = 0x102;
const T_FPU: u32 = 0x103;
const T_XSAVE: u32 = 0x104;
const T_XCRS: u32 = 0x105;
const T_DEBUG: u32 = 0x106;
const T_LAPIC: u32 = 0x107;
const T_MSRS: u32 = 0x108;
const T_EVENTS: u32 = 0x109;
const T_PIT: u32 = 0x200;
const T_CLOCK: u32 = 0x201;
const T_IRQCHIP: u32 = 0x202;

/// Everything KVM keeps of one vCPU. XSAVE, XCRs and debug registers are
/// kept when this KVM offers them (a software `/dev/kvm` may not).
pub(crate) struct VcpuState {
    mp: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xsave: Option<Box<kvm_xsave>>,
    xcrs: Option<kvm_xcrs>,
    debug: Option<kvm_debugregs>,
    lapic: kvm_lapic_state,
    msrs: Vec<(u32, u64)>,
    events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VcpuState {{ rip: {:#x}, mp_state: {}, {} MSRs }}",
            self.regs.rip,
            self.mp.mp_state,
            self.msrs.len()
        )
    }
}

/// The MSRs KVM saves and restores (`KVM_GET_MSR_INDEX_LIST`).
fn msr_indices(kvm: &Kvm) -> Result<Vec<u32>, KvmStateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(KvmStateError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(list.as_slice().to_vec())
}

/// The MSRs KVM lets this vCPU read, of `indices`.
fn read_msrs_of(
    vcpu: &VcpuFd,
    indices: impl IntoIterator<Item = u32>,
) -> Result<Vec<(u32, u64)>, KvmStateError> {
    let mut out = Vec::new();
    // One at a time: KVM stops a batch at the first MSR it refuses, and
    // which it refuses depends on the CPU model.
    for index in indices {
        let mut m = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(KvmStateError::MsrList)?;
        if let Ok(1) = vcpu.get_msrs(&mut m) {
            out.push((index, m.as_slice()[0].data));
        }
    }
    Ok(out)
}

impl VcpuState {
    /// Reads the state of a vCPU that is out of `KVM_RUN` on this thread.
    pub(crate) fn capture(vcpu: &mut VcpuFd) -> Result<Self, KvmStateError> {
        // Finish a pending port or MMIO read without running guest code.
        vcpu.set_kvm_immediate_exit(1);
        let _ = vcpu.run();
        vcpu.set_kvm_immediate_exit(0);
        let e = KvmStateError::kvm;
        let mp = vcpu.get_mp_state().map_err(e("KVM_GET_MP_STATE"))?;
        let regs = vcpu.get_regs().map_err(e("KVM_GET_REGS"))?;
        let sregs = vcpu.get_sregs().map_err(e("KVM_GET_SREGS"))?;
        let fpu = vcpu.get_fpu().map_err(e("KVM_GET_FPU"))?;
        // XSAVE, XCRs and debug registers where this KVM has them (a
        // software /dev/kvm may not); where it has them, a failed read fails
        // the capture instead of saving a vCPU without them.
        let kvm = Kvm::new().map_err(KvmStateError::OpenKvm)?;
        let has = |cap: Cap| kvm.check_extension(cap);
        let xsave = match has(Cap::Xsave) {
            true => Some(Box::new(vcpu.get_xsave().map_err(e("KVM_GET_XSAVE"))?)),
            false => None,
        };
        let xcrs = match has(Cap::Xcrs) {
            true => Some(vcpu.get_xcrs().map_err(e("KVM_GET_XCRS"))?),
            false => None,
        };
        let debug = match has(Cap::Debugregs) {
            true => Some(vcpu.get_debug_regs().map_err(e("KVM_GET_DEBUGREGS"))?),
            false => None,
        };
        let lapic = vcpu.get_lapic().map_err(e("KVM_GET_LAPIC"))?;
        let msrs = read_msrs_of(vcpu, msr_indices(&kvm)?)?;
        let events = vcpu.get_vcpu_events().map_err(e("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            mp,
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            debug,
            lapic,
            msrs,
            events,
        })
    }

    /// Puts the state into a fresh vCPU (its CPUID already set). Returns the
    /// MSRs KVM refused, which stay at their reset values.
    pub(crate) fn apply(&self, vcpu: &VcpuFd) -> Result<Vec<u32>, VmmError> {
        use crate::kvm::kvm_err;
        vcpu.set_mp_state(self.mp)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        vcpu.set_regs(&self.regs).map_err(kvm_err("KVM_SET_REGS"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_fpu(&self.fpu).map_err(kvm_err("KVM_SET_FPU"))?;
        if let Some(x) = &self.xsave {
            // SAFETY: `x` is a whole `kvm_xsave` (4 KiB), the size
            // KVM_SET_XSAVE reads; it was read by KVM_GET_XSAVE of a vCPU
            // with the same CPUID.
            unsafe { vcpu.set_xsave(x) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        }
        if let Some(x) = &self.xcrs {
            vcpu.set_xcrs(x).map_err(kvm_err("KVM_SET_XCRS"))?;
        }
        if let Some(d) = &self.debug {
            vcpu.set_debug_regs(d)
                .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        }
        vcpu.set_lapic(&self.lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        // Only the MSRs whose value differs from the fresh vCPU's: the same
        // end state, and no write KVM would log as unimplemented (AMD's
        // DEBUGCTL of 0 without LBR virtualization, "Unhandled WRMSR").
        let fresh: Vec<(u32, u64)> =
            read_msrs_of(vcpu, self.msrs.iter().map(|&(i, _)| i)).map_err(VmmError::VcpuState)?;
        let differ: Vec<(u32, u64)> = self
            .msrs
            .iter()
            .filter(|m| !fresh.contains(m))
            .copied()
            .collect();
        let mut refused = Vec::new();
        let mut rest: &[(u32, u64)] = &differ;
        while !rest.is_empty() {
            let msrs = super::x86_64::regs::msr_list(rest)?;
            let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
            if set < rest.len() {
                // KVM stopped at entry `set`: skip it and go on.
                refused.push(rest[set].0);
                rest = &rest[set + 1..];
            } else {
                rest = &[];
            }
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
        Ok(refused)
    }

    pub(crate) fn encode(&self, out: &mut Records) {
        out.pod(T_MP, &self.mp);
        out.pod(T_REGS, &self.regs);
        out.pod(T_SREGS, &self.sregs);
        out.raw(T_FPU, &fpu_bytes(&self.fpu));
        out.opt(T_XSAVE, self.xsave.as_deref());
        out.opt(T_XCRS, self.xcrs.as_ref());
        out.opt(T_DEBUG, self.debug.as_ref());
        out.pod(T_LAPIC, &self.lapic);
        let msrs: Vec<u8> = self
            .msrs
            .iter()
            .flat_map(|&(i, d)| {
                let mut b = [0u8; 12];
                b[..4].copy_from_slice(&i.to_le_bytes());
                b[4..].copy_from_slice(&d.to_le_bytes());
                b
            })
            .collect();
        out.raw(T_MSRS, &msrs);
        out.pod(T_EVENTS, &self.events);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, KvmStateError> {
        let mp = r.pod(T_MP)?;
        let regs = r.pod(T_REGS)?;
        let sregs = r.pod(T_SREGS)?;
        let raw = r.raw(T_FPU)?;
        let fpu = fpu_from(raw).ok_or(KvmStateError::WrongSize {
            tag: T_FPU,
            len: raw.len(),
            want: FPU_LEN,
        })?;
        let xsave = r.opt::<kvm_xsave>(T_XSAVE)?.map(Box::new);
        let xcrs = r.opt(T_XCRS)?;
        let debug = r.opt(T_DEBUG)?;
        let lapic = r.pod(T_LAPIC)?;
        let raw = r.raw(T_MSRS)?;
        if raw.len() % 12 != 0 {
            return Err(KvmStateError::BadLength {
                record: "MSR",
                len: raw.len(),
            });
        }
        let msrs = raw
            .chunks_exact(12)
            .map(|c| {
                let mut i = [0u8; 4];
                let mut d = [0u8; 8];
                i.copy_from_slice(&c[..4]);
                d.copy_from_slice(&c[4..]);
                (u32::from_le_bytes(i), u64::from_le_bytes(d))
            })
            .collect();
        let events = r.pod(T_EVENTS)?;
        Ok(VcpuState {
            mp,
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            debug,
            lapic,
            msrs,
            events,
        })
    }
}

/// What KVM keeps of the VM itself: the PIT, the clock, the two PICs and
/// the IOAPIC.
#[derive(Clone)]
pub(crate) struct VmState {
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
    irqchips: [kvm_irqchip; 3],
}

const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

impl VmState {
    /// Reads the state of a VM whose vCPUs are all parked.
    pub(crate) fn capture(vm: &VmFd) -> Result<Self, VmmError> {
        use crate::kvm::kvm_err;
        let pit = vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?;
        let mut clock = vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?;
        // KVM_SET_CLOCK refuses KVM_CLOCK_TSC_STABLE, and KVM_CLOCK_REALTIME
        // is not wanted: the guest's clock goes on from the save, not from
        // the host's time (the agent sets the wall clock).
        clock.flags = 0;
        let mut irqchips = [kvm_irqchip::default(); 3];
        for (chip, id) in irqchips.iter_mut().zip(IRQCHIPS) {
            chip.chip_id = id;
            vm.get_irqchip(chip).map_err(kvm_err("KVM_GET_IRQCHIP"))?;
        }
        Ok(VmState {
            pit,
            clock,
            irqchips,
        })
    }

    /// Puts the state into a fresh VM (irqchip and PIT created, vCPUs set).
    pub(crate) fn apply(&self, vm: &VmFd) -> Result<(), VmmError> {
        use crate::kvm::kvm_err;
        vm.set_pit2(&self.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
        vm.set_clock(&self.clock)
            .map_err(kvm_err("KVM_SET_CLOCK"))?;
        for chip in &self.irqchips {
            vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        Ok(())
    }

    pub(crate) fn encode(&self, out: &mut Records) {
        out.pod(T_PIT, &self.pit);
        out.pod(T_CLOCK, &self.clock);
        for chip in &self.irqchips {
            out.pod(T_IRQCHIP, chip);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, KvmStateError> {
        let pit = r.pod(T_PIT)?;
        let clock = r.pod(T_CLOCK)?;
        let irqchips = [r.pod(T_IRQCHIP)?, r.pod(T_IRQCHIP)?, r.pod(T_IRQCHIP)?];
        Ok(VmState {
            pit,
            clock,
            irqchips,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_fpu_is_written_in_its_repr_c_layout_and_read_back() {
        // The field-by-field encoding keeps the C layout (and so older images).
        assert_eq!(std::mem::size_of::<kvm_fpu>(), FPU_LEN);
        assert_eq!(std::mem::offset_of!(kvm_fpu, fcw), 128);
        assert_eq!(std::mem::offset_of!(kvm_fpu, last_ip), 136);
        assert_eq!(std::mem::offset_of!(kvm_fpu, xmm), 152);
        assert_eq!(std::mem::offset_of!(kvm_fpu, mxcsr), 408);
        let mut f = kvm_fpu {
            fcw: 0x37f,
            fsw: 0x1234,
            ftwx: 0xaa,
            last_opcode: 0x7ff,
            last_ip: 0x1122_3344_5566_7788,
            last_dp: 0x99,
            mxcsr: 0x1f80,
            ..kvm_fpu::default()
        };
        f.fpr[7][15] = 0x42;
        f.xmm[15][0] = 0x5a;
        let b = fpu_bytes(&f);
        assert_eq!(b.len(), FPU_LEN);
        assert_eq!(&b[136..144], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!((b[127], b[392], b[408]), (0x42, 0x5a, 0x80));
        assert_eq!(fpu_from(&b), Some(f));
        assert_eq!(fpu_from(&b[1..]), None);
    }

    #[test]
    fn records_round_trip_and_name_what_is_wrong() {
        let mut regs = kvm_regs {
            rip: 0x1234,
            ..Default::default()
        };
        regs.rax = 7;
        let mut out = Records::default();
        out.pod(T_REGS, &regs);
        out.opt::<kvm_xcrs>(T_XCRS, None);
        out.raw(T_MSRS, b"abc");
        let mut r = Reader::new(&out.0);
        let back: kvm_regs = r.pod(T_REGS).expect("regs");
        assert_eq!((back.rip, back.rax), (0x1234, 7));
        assert!(r.opt::<kvm_xcrs>(T_XCRS).expect("xcrs").is_none());
        assert_eq!(r.raw(T_MSRS).expect("raw"), b"abc");
        assert!(
            r.raw(T_EVENTS)
                .expect_err("an error")
                .to_string()
                .contains("ends before")
        );
        // A record of the wrong size or tag is an error, not garbage.
        let mut r = Reader::new(&out.0);
        assert!(
            r.pod::<kvm_sregs>(T_SREGS)
                .expect_err("an error")
                .to_string()
                .contains("where")
        );
        let mut short = Records::default();
        short.raw(T_REGS, &[0; 8]);
        let e = Reader::new(&short.0)
            .pod::<kvm_regs>(T_REGS)
            .expect_err("an error");
        assert!(e.to_string().contains("another build"), "{e}");
    }
}
