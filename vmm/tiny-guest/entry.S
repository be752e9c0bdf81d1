/* Entries of the tiny guest: the bzImage 32-bit stub (offset 0, unused) and 64-bit
 * entry (offset 0x200), the PVH 32-bit entry named by the Xen ELF note, and the AP
 * trampoline started by INIT-SIPI-SIPI. Every path ends in 64-bit C code
 * (guest.c) on the guest's own identity page tables (4 GiB in 2 MiB pages). */

#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define CR0_PE 1
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)

#define SEL_CODE32 0x08
#define SEL_DATA 0x10
#define SEL_CODE64 0x18

/* Enter long mode from flat 32-bit protected mode, then far-jump to \target. */
.macro LONG_MODE target
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $SEL_CODE64, $\target
.endm

    .section .head, "ax"
    .code32
    .globl startup_32
startup_32:
    /* The bzImage 32-bit entry: this guest is only entered at 64 bits. */
1:  hlt
    jmp 1b

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    /* Linux 64-bit boot protocol: long mode, identity-mapped, %rsi = boot_params. */
    cli
    movq %rsi, %rdi
    lgdt gdt_desc(%rip)
    movq $bsp_stack_top, %rsp
    /* Reload CS and the data segments from our own GDT. */
    pushq $SEL_CODE64
    leaq 1f(%rip), %rax
    pushq %rax
    lretq
1:  movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movq $pml4, %rax
    movq %rax, %cr3
    movl $1, %esi               /* boot protocol 1: bzImage, %rdi = boot_params */
    call guest_main
2:  cli
    hlt
    jmp 2b

    .text
    .code32
    .globl pvh_start32
pvh_start32:
    /* PVH: 32-bit protected mode, paging off, %ebx = hvm_start_info. */
    cli
    lgdt gdt_desc
    movl %ebx, pvh_start_info
    LONG_MODE pvh_start64

    .code32
ap_start32:
    /* The trampoline loaded our GDT; DS still holds its real-mode segment, so
     * nothing may touch memory before LONG_MODE reloads the data selectors. */
    LONG_MODE ap_start64

    .code64
pvh_start64:
    movq $bsp_stack_top, %rsp
    movl pvh_start_info, %edi
    xorl %esi, %esi             /* boot protocol 0: PVH, %rdi = hvm_start_info */
    call guest_main
1:  cli
    hlt
    jmp 1b

ap_start64:
    movq ap_stack_top, %rsp
    call ap_main
1:  cli
    hlt
    jmp 1b

    .data
    .balign 16
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
gdt_end:
    .globl gdt_desc
gdt_desc:
    .word gdt_end - gdt - 1
    .quad gdt
pvh_start_info:
    .long 0
    .globl ap_stack_top
ap_stack_top:
    .quad 0

    /* The AP trampoline, copied to 0x10000 and run there in real mode (CS =
     * 0x1000, IP = 0): it only addresses itself relative to CS. */
    .text
    .code16
    .globl trampoline, trampoline_end
trampoline:
    cli
    movw %cs, %ax
    movw %ax, %ds
    lgdtl tramp_gdt_desc - trampoline
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $ap_start32
    .balign 8
tramp_gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
trampoline_end:

    /* Identity map of the first 4 GiB with 2 MiB pages (LAPIC MMIO included). */
    .section .pagetables, "aw"
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .fill 508, 8, 0
pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) | 0x83      /* present, writable, 2 MiB page */
    .set i, i + 1
    .endr

    .bss
    .balign 16
    .skip 16384
    .globl bsp_stack_top
bsp_stack_top:
    .skip 16384
    .globl ap_stack_area_top
ap_stack_area_top:

    /* The PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY = 18, include/xen/interface/elfnote.h). */
    .section .note.Xen, "a"
    .balign 4
    .long 4                     /* namesz */
    .long 4                     /* descsz */
    .long 18                    /* type */
    .asciz "Xen"
    .long pvh_start32
