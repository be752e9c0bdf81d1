//! MSRs of hardware the VM does not have.
//!
//! An AMD guest cannot ask CPUID whether the four legacy performance counters
//! exist: Linux assumes them from the CPU family and probes them at boot
//! (`check_hw_exists`: read a counter, write it back changed, read again).
//! When the host's KVM runs guests without a PMU (`kvm.enable_pmu=0`, or a
//! nested host such as QEMU's emulated SVM), KVM reads those MSRs as zero,
//! drops the write and logs `kvm: Unhandled WRMSR(0xc0010007) = 0xffff` on the
//! host. The VM then has no PMU, so the VMM says so the architectural way:
//! an MSR filter denies the guest the counters' MSRs, every access raises
//! #GP, and Linux reports "PMU not available due to virtualization, using
//! software events only" without bothering the host's log.

use kvm_ioctls::{Cap, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

use crate::VmmError;
use crate::kvm::kvm_err;

/// AMD's performance-counter MSRs (AMD APM vol. 2 §13.2): the legacy
/// PERF_CTL0-3 and PERF_CTR0-3 at 0xc001_0000, and the six core counters'
/// PERF_CTL/PERF_CTR pairs at 0xc001_0200 (family 15h and later).
pub(crate) const AMD_PMU_MSRS: [(u32, u32); 2] = [(0xc001_0000, 8), (0xc001_0200, 12)];

/// `KVM_CAP_PMU_CAPABILITY` (linux/kvm.h): non-zero when KVM virtualizes a PMU.
const KVM_CAP_PMU_CAPABILITY: u64 = 212;

/// The MSR ranges to deny the guest: the PMU's when KVM gives it none.
pub(crate) fn denied_ranges(kvm_has_pmu: bool) -> &'static [(u32, u32)] {
    if kvm_has_pmu { &[] } else { &AMD_PMU_MSRS }
}

/// Installs the filter of [`denied_ranges`] on `vm`; returns the ranges denied.
/// A KVM without MSR filters (before Linux 5.10) is left as it is.
pub(crate) fn deny_absent_hardware(vm: &VmFd) -> Result<&'static [(u32, u32)], VmmError> {
    if !vm.check_extension(Cap::X86MsrFilter) {
        return Ok(&[]);
    }
    let has_pmu = vm.check_extension_raw(KVM_CAP_PMU_CAPABILITY) > 0;
    let denied = denied_ranges(has_pmu);
    if denied.is_empty() {
        return Ok(denied);
    }
    // One bit per MSR, 0 = deny; 12 MSRs fit in two bytes.
    let deny_all = [0u8; 2];
    let ranges: Vec<MsrFilterRange<'_>> = denied
        .iter()
        .map(|&(base, count)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: count,
            bitmap: &deny_all,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(kvm_err("KVM_X86_SET_MSR_FILTER"))?;
    Ok(denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pmu_msrs_are_denied_only_without_a_pmu() {
        assert!(denied_ranges(true).is_empty());
        let denied = denied_ranges(false);
        // The MSR of the host's "Unhandled WRMSR(0xc0010007)" is among them,
        // and so are the core counters' control and counter registers.
        let covers = |msr: u32| denied.iter().any(|&(b, n)| (b..b + n).contains(&msr));
        assert!(covers(0xc001_0007), "PERF_CTR3");
        assert!(covers(0xc001_0000), "PERF_CTL0");
        assert!(covers(0xc001_020b), "core PERF_CTR5");
        assert!(
            !covers(0xc001_0008) && !covers(0xc000_0080),
            "EFER and others stay"
        );
        assert!(
            denied.iter().all(|&(_, n)| n <= 16),
            "the bitmap covers each range"
        );
    }

    /// On this host's `/dev/kvm` the filter installs (or KVM has no filters
    /// and nothing is denied), and a VM with it still creates vCPUs.
    #[test]
    fn the_filter_installs_on_this_hosts_kvm() {
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm (the KVM backend's tests need it)");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let denied = deny_absent_hardware(&vm).expect("MSR filter");
        let has_pmu = vm.check_extension_raw(KVM_CAP_PMU_CAPABILITY) > 0;
        if vm.check_extension(Cap::X86MsrFilter) {
            assert_eq!(denied, denied_ranges(has_pmu));
        }
        vm.create_vcpu(0).expect("a vCPU after the filter");
    }
}
