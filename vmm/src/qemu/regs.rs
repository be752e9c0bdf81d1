//! vCPU registers from QEMU's `info registers` (HMP, through QMP's
//! `human-monitor-command` with a `cpu-index`): QMP itself has no command
//! that returns CR3. The text format is QEMU's `x86_cpu_dump_state`
//! (target/i386/cpu-dump.c): `NAME=hex` pairs, segments as
//! `GS =selector base limit flags`.

use crate::{VcpuRegs, VmmError};

/// The registers in `text` (one CPU's `info registers`). CR3, CR4 and RIP
/// must be there; a missing or malformed one names itself.
pub(crate) fn parse(text: &str) -> Result<VcpuRegs, VmmError> {
    let bad = |what: &str| {
        let head: String = text.chars().take(200).collect();
        VmmError::Control(format!(
            "QEMU's `info registers` has no readable {what}: {head:?}"
        ))
    };
    let value = |name: &str| -> Option<u64> {
        text.split_whitespace().find_map(|w| {
            let v = w.strip_prefix(name)?.strip_prefix('=')?;
            u64::from_str_radix(v, 16).ok()
        })
    };
    let need = |name: &str| value(name).ok_or_else(|| bad(name));
    // `GS =0000 ffff8efbc533c000 00000000 00000000`: the base is the second field.
    let gs_base = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("GS ="))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|b| u64::from_str_radix(b, 16).ok())
        .unwrap_or(0);
    Ok(VcpuRegs {
        rip: need("RIP")?,
        rsp: value("RSP").unwrap_or(0),
        cr0: value("CR0").unwrap_or(0),
        cr3: need("CR3")?,
        cr4: need("CR4")?,
        efer: value("EFER").unwrap_or(0),
        gs_base,
        kernel_gs_base: 0,
        rflags: value("RFL").unwrap_or(0),
        mp_state: u32::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10.0.2, a 7.3 guest under TCG (trimmed after EFER).
    const SAMPLE: &str = "\
RAX=0946502c6ca0265e RBX=ffff8efb4279f600 RCX=4b0a5e55d3d080ae RDX=5932dbe274df225f
RSI=3575cf7dbc0bd2f4 RDI=00000000000000d8 RBP=0000000100000000 RSP=ffffcfcc404e7ae8
R8 =00000000fffffffb R9 =000000001c6ed366 R10=00000000b5b9642b R11=ffff8efb425fd088
R12=ffffffffffffffe0 R13=d3d080ae00000000 R14=5932dbe274df225f R15=00000000000000f0
RIP=ffffffff97d44f47 RFL=00000287 [--S--PC] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
SS =0000 0000000000000000 ffffffff 00c09300 DPL=0 DS   [-WA]
DS =0000 0000000000000000 00000000 00000000
FS =0000 0000000000000000 00000000 00000000
GS =0000 ffff8efbc533c000 00000000 00000000
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT
TR =0040 fffffe3374d87000 00004087 00008900 DPL=0 TSS64-avl
GDT=     fffffe3374d85000 0000007f
IDT=     fffffe0000000000 00000fff
CR0=80050033 CR2=0000000000416210 CR3=00000000027ec000 CR4=000006f0
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
";

    #[test]
    fn the_registers_of_a_real_dump() {
        let r = parse(SAMPLE).expect("parses");
        assert_eq!(r.rip, 0xffff_ffff_97d4_4f47);
        assert_eq!(r.rsp, 0xffff_cfcc_404e_7ae8);
        assert_eq!(r.cr0, 0x8005_0033);
        assert_eq!(r.cr3, 0x27e_c000);
        assert_eq!(r.cr4, 0x6f0);
        assert_eq!(r.efer, 0xd01);
        assert_eq!(r.gs_base, 0xffff_8efb_c533_c000);
        assert_eq!(r.rflags, 0x287);
    }

    #[test]
    fn a_dump_without_cr3_names_it() {
        let e = parse(&SAMPLE.replace("CR3=00000000027ec000", "CR3=zz")).expect_err("no CR3");
        assert!(e.to_string().contains("CR3"), "{e}");
        let e = parse("Error: no such CPU").expect_err("not a dump");
        assert!(e.to_string().contains("no such CPU"), "{e}");
    }
}
