/* The tiny guest: a freestanding kernel that checks what the VMM handed over and
 * reports it, one line per fact, over COM2 (port 0x2f8). The host test parses the
 * lines (vmm/tests/tiny_guest.rs) and compares them with the declared VM.
 *
 * It only uses instructions the software hypervisor of the development machine
 * emulates (shared/ENVIRONMENT.md): no SSE/AVX (-mgeneral-regs-only), no popcnt,
 * no cmpxchg16b, no rdtscp, no xsave.
 *
 * Boot vCPU: boot info (hvm_start_info or boot_params), e820 map, cmdline, initrd
 * (address, size, a hash of its contents), RSDP and every table it reaches; then
 * its own CPU report; then each AP in MADT order, one at a time, started by
 * INIT-SIPI-SIPI as Linux does, writes its own CPU report. Finally the BSP powers
 * off through the FADT's sleep control register, or (cmdline "mode=count") counts
 * in memory forever for the pause/resume test, or (cmdline "mode=triple")
 * triple-faults on purpose for the diagnostic bundle's test, or (cmdline "mode=tick") counts
 * and reports on COM2 now and then, with the payload region's first word, for
 * the save/restore test. */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM2 0x2f8
#define LAPIC_BASE 0xfee00000UL
#define LAPIC_ID 0x20
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define TRAMPOLINE 0x10000UL
#define HVM_START_MAGIC 0x336ec578U
/* ACPI 6.5 §4.8.3.7: SLP_TYP in bits 4:2, SLP_EN bit 5 of the sleep control register. */
#define SLP_EN (1 << 5)
#define S5_SLEEP_TYPE 5

extern char trampoline[], trampoline_end[];
extern u64 ap_stack_top;
extern char ap_stack_area_top[];

void *memcpy(void *d, const void *s, unsigned long n)
{
	u8 *dd = d;
	const u8 *ss = s;
	while (n--)
		*dd++ = *ss++;
	return d;
}

void *memset(void *d, int c, unsigned long n)
{
	u8 *dd = d;
	while (n--)
		*dd++ = (u8)c;
	return d;
}

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 rd8(u64 a) { return *(volatile u8 *)a; }
static inline u16 rd16(u64 a) { return *(volatile u16 *)a; }
static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline u64 rd64(u64 a) { return *(volatile u64 *)a; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }

static void putc(char c) { outb(COM2, (u8)c); }

static void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void puthex(u64 v)
{
	char buf[19];
	int i = 18;
	buf[i] = 0;
	do {
		buf[--i] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	buf[--i] = 'x';
	buf[--i] = '0';
	puts(&buf[i]);
}

static void putdec(u64 v)
{
	char buf[21];
	int i = 20;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&buf[i]);
}

/* " key=0x..." */
static void kv(const char *k, u64 v)
{
	putc(' ');
	puts(k);
	putc('=');
	puthex(v);
}

static void cpuid(u32 leaf, u32 sub, u32 r[4])
{
	__asm__ volatile("cpuid"
			 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(sub));
}

static u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static u64 read_cr3(void)
{
	u64 v;
	__asm__ volatile("mov %%cr3, %0" : "=r"(v));
	return v;
}

static u32 lapic_id(void) { return rd32(LAPIC_BASE + LAPIC_ID) >> 24; }

/* ---- ACPI ---------------------------------------------------------------- */

static u8 sum(u64 a, u64 len)
{
	u8 s = 0;
	for (u64 i = 0; i < len; i++)
		s = (u8)(s + rd8(a + i));
	return s;
}

static int sig_is(u64 a, const char *sig)
{
	for (int i = 0; i < 4; i++)
		if (rd8(a + i) != (u8)sig[i])
			return 0;
	return 1;
}

struct acpi {
	u64 rsdp, xsdt, madt, srat, slit, fadt;
};

/* RSDP -> XSDT -> tables; 0 when the RSDP is bad. Reports when `verbose`. */
static int acpi_walk(u64 rsdp, struct acpi *t, int verbose)
{
	memset(t, 0, sizeof(*t));
	t->rsdp = rsdp;
	const char *magic = "RSD PTR ";
	for (int i = 0; i < 8; i++)
		if (rd8(rsdp + i) != (u8)magic[i])
			return 0;
	u32 rlen = rd32(rsdp + 20);
	if (verbose) {
		puts("RSDP");
		kv("addr", rsdp);
		kv("rev", rd8(rsdp + 15));
		kv("sum20", sum(rsdp, 20));
		kv("sum", sum(rsdp, rlen));
		kv("xsdt", rd64(rsdp + 24));
		puts("\n");
	}
	t->xsdt = rd64(rsdp + 24);
	if (!sig_is(t->xsdt, "XSDT"))
		return 0;
	u32 xlen = rd32(t->xsdt + 4);
	u32 n = (xlen - 36) / 8;
	for (u32 i = 0; i < n; i++) {
		u64 a = rd64(t->xsdt + 36 + 8 * i);
		u32 len = rd32(a + 4);
		if (verbose) {
			puts("TABLE sig=");
			for (int k = 0; k < 4; k++)
				putc((char)rd8(a + k));
			kv("addr", a);
			kv("len", len);
			kv("sum", sum(a, len));
			puts("\n");
		}
		if (sig_is(a, "APIC"))
			t->madt = a;
		else if (sig_is(a, "SRAT"))
			t->srat = a;
		else if (sig_is(a, "SLIT"))
			t->slit = a;
		else if (sig_is(a, "FACP"))
			t->fadt = a;
	}
	return 1;
}

/* Calls f(index, uid, apic_id, flags) for every LAPIC/x2APIC entry of the MADT. */
typedef void (*madt_fn)(u32 index, u32 uid, u32 apic, u32 flags, void *ctx);

static void madt_each(u64 madt, madt_fn f, void *ctx)
{
	if (!madt)
		return;
	u64 end = madt + rd32(madt + 4);
	u32 index = 0;
	for (u64 p = madt + 44; p + 2 <= end && rd8(p + 1) >= 2; p += rd8(p + 1)) {
		u8 type = rd8(p);
		if (type == 0)
			f(index++, rd8(p + 2), rd8(p + 3), rd32(p + 4), ctx);
		else if (type == 9)
			f(index++, rd32(p + 12), rd32(p + 4), rd32(p + 8), ctx);
	}
}

/* The SRAT node of `apic`, or ~0. */
static u32 srat_node_of(u64 srat, u32 apic)
{
	if (!srat)
		return ~0U;
	u64 end = srat + rd32(srat + 4);
	for (u64 p = srat + 48; p + 2 <= end && rd8(p + 1) >= 2; p += rd8(p + 1)) {
		u8 type = rd8(p);
		if (type == 0 && rd8(p + 3) == apic && (rd32(p + 4) & 1))
			return rd8(p + 2) | (rd8(p + 9) << 8) | (rd8(p + 10) << 16) |
			       ((u32)rd8(p + 11) << 24);
		if (type == 2 && rd32(p + 8) == apic && (rd32(p + 12) & 1))
			return rd32(p + 4);
	}
	return ~0U;
}

/* ---- per-vCPU report ------------------------------------------------------ */

struct view_ctx {
	u32 apic;
	u32 found;
	u32 index;
	u32 uid;
	u32 flags;
};

static void find_self(u32 index, u32 uid, u32 apic, u32 flags, void *p)
{
	struct view_ctx *c = p;
	if (apic == c->apic && !c->found) {
		c->found = 1;
		c->index = index;
		c->uid = uid;
		c->flags = flags;
	}
}

static void report_leaf(u32 apic, u32 leaf, u32 sub, u32 r[4])
{
	puts("CPUID");
	kv("apic", apic);
	kv("leaf", leaf);
	kv("sub", sub);
	kv("eax", r[0]);
	kv("ebx", r[1]);
	kv("ecx", r[2]);
	kv("edx", r[3]);
	puts("\n");
}

/* Reports subleaves of `leaf` until `last` says the list ended (inclusive). */
static void report_subleaves(u32 apic, u32 leaf, int levels)
{
	u32 r[4];
	for (u32 sub = 0; sub < 8; sub++) {
		cpuid(leaf, sub, r);
		report_leaf(apic, leaf, sub, r);
		int end = levels ? ((r[1] & 0xffff) == 0 || ((r[2] >> 8) & 0xff) == 0)
				 : (r[0] & 0x1f) == 0;
		if (end)
			break;
	}
}

static u64 rsdp_addr;

static void report_cpu(void)
{
	u32 apic = lapic_id();
	u32 r[4];
	puts("CPU");
	kv("apic", apic);
	kv("cr3", read_cr3());
	puts("\n");

	cpuid(0, 0, r);
	u32 max_basic = r[0];
	report_leaf(apic, 0, 0, r);
	cpuid(1, 0, r);
	report_leaf(apic, 1, 0, r);
	report_subleaves(apic, 4, 0);
	report_subleaves(apic, 0xb, 1);
	if (max_basic >= 0x1f)
		report_subleaves(apic, 0x1f, 1);
	cpuid(0x80000000, 0, r);
	u32 max_ext = r[0];
	report_leaf(apic, 0x80000000, 0, r);
	if (max_ext >= 0x80000001) {
		cpuid(0x80000001, 0, r);
		report_leaf(apic, 0x80000001, 0, r);
	}
	if (max_ext >= 0x80000006) {
		cpuid(0x80000006, 0, r);
		report_leaf(apic, 0x80000006, 0, r);
	}
	if (max_ext >= 0x80000008) {
		cpuid(0x80000008, 0, r);
		report_leaf(apic, 0x80000008, 0, r);
	}
	if (max_ext >= 0x8000001d)
		report_subleaves(apic, 0x8000001d, 0);
	if (max_ext >= 0x8000001e) {
		cpuid(0x8000001e, 0, r);
		report_leaf(apic, 0x8000001e, 0, r);
	}

	/* This vCPU's own walk of RSDP -> XSDT -> MADT/SRAT/SLIT. */
	struct acpi t;
	int ok = acpi_walk(rsdp_addr, &t, 0);
	struct view_ctx c = {.apic = apic};
	madt_each(t.madt, find_self, &c);
	u32 node = srat_node_of(t.srat, apic);
	puts("VIEW");
	kv("apic", apic);
	kv("acpi", (u64)ok);
	kv("madt", c.found);
	kv("index", c.index);
	kv("uid", c.uid);
	kv("flags", c.flags);
	kv("node", node);
	puts(" slit=");
	if (t.slit && node != ~0U) {
		u64 n = rd64(t.slit + 36);
		for (u64 j = 0; j < n && node < n; j++) {
			if (j)
				putc(',');
			putdec(rd8(t.slit + 44 + node * n + j));
		}
	}
	puts("\n");
	puts("CPUDONE");
	kv("apic", apic);
	puts("\n");
}

/* ---- boot info -------------------------------------------------------------- */

static int has_word(const char *s, const char *w)
{
	for (; *s; s++) {
		const char *a = s, *b = w;
		while (*b && *a == *b)
			a++, b++;
		if (!*b && (*a == 0 || *a == ' '))
			return 1;
	}
	return 0;
}

static void e820_line(u64 addr, u64 size, u32 type)
{
	puts("E820");
	kv("addr", addr);
	kv("size", size);
	kv("type", type);
	puts("\n");
}

/* FNV-1a over little-endian 64-bit words (the tail zero-padded): cheap enough
 * for an emulated guest; the host computes the same. */
static u64 hash_bytes(u64 a, u64 len)
{
	u64 h = 0xcbf29ce484222325UL;
	u64 i = 0;
	for (; i + 8 <= len; i += 8) {
		h ^= rd64(a + i);
		h *= 0x100000001b3UL;
	}
	if (i < len) {
		u64 w = 0;
		for (u64 k = 0; i + k < len; k++)
			w |= (u64)rd8(a + i + k) << (8 * k);
		h ^= w;
		h *= 0x100000001b3UL;
	}
	return h;
}

static void initrd_line(u64 addr, u64 size)
{
	puts("INITRD");
	kv("addr", addr);
	kv("size", size);
	kv("hash", size ? hash_bytes(addr, size) : 0);
	puts("\n");
}

static const char *cmdline_text;

/* The payload region's address from "ktstr.payload=SIZE@ADDR" (hex), or 0. */
static u64 payload_addr(const char *s)
{
	static const char key[] = "ktstr.payload=";
	for (; s && *s; s++) {
		const char *a = s, *b = key;
		while (*b && *a == *b)
			a++, b++;
		if (*b)
			continue;
		while (*a && *a != '@' && *a != ' ')
			a++;
		if (*a != '@')
			return 0;
		a++;
		if (a[0] == '0' && a[1] == 'x')
			a += 2;
		u64 v = 0;
		for (;; a++) {
			u64 d;
			if (*a >= '0' && *a <= '9')
				d = (u64)(*a - '0');
			else if (*a >= 'a' && *a <= 'f')
				d = (u64)(*a - 'a' + 10);
			else
				break;
			v = v * 16 + d;
		}
		return v;
	}
	return 0;
}

static void pvh_info(u64 si)
{
	puts("BOOT proto=pvh");
	kv("magic", rd32(si));
	kv("version", rd32(si + 4));
	kv("info", si);
	puts("\n");
	if (rd32(si) != HVM_START_MAGIC)
		return;
	u32 nr_modules = rd32(si + 12);
	u64 modlist = rd64(si + 16);
	u64 cmdline = rd64(si + 24);
	rsdp_addr = rd64(si + 32);
	u64 memmap = rd64(si + 40);
	u32 entries = rd32(si + 48);
	for (u32 i = 0; i < entries; i++) {
		u64 e = memmap + 24 * i;
		e820_line(rd64(e), rd64(e + 8), rd32(e + 16));
	}
	cmdline_text = (const char *)cmdline;
	for (u32 i = 0; i < nr_modules; i++)
		initrd_line(rd64(modlist + 32 * i), rd64(modlist + 32 * i + 8));
}

static void bz_info(u64 bp)
{
	puts("BOOT proto=bzimage");
	kv("info", bp);
	kv("hdr", rd32(bp + 0x202));
	kv("version", rd16(bp + 0x206));
	kv("loader", rd8(bp + 0x210));
	puts("\n");
	u32 entries = rd8(bp + 0x1e8);
	for (u32 i = 0; i < entries; i++) {
		u64 e = bp + 0x2d0 + 20 * i;
		e820_line(rd64(e), rd64(e + 8), rd32(e + 16));
	}
	u64 cmdline = rd32(bp + 0x228) | ((u64)rd32(bp + 0x0c8) << 32);
	cmdline_text = (const char *)cmdline;
	rsdp_addr = rd64(bp + 0x070);
	u64 rd = rd32(bp + 0x218) | ((u64)rd32(bp + 0x0c0) << 32);
	u64 rs = rd32(bp + 0x21c) | ((u64)rd32(bp + 0x0c4) << 32);
	if (rs)
		initrd_line(rd, rs);
}

/* ---- APs ---------------------------------------------------------------------- */

static volatile u32 ap_done;

void ap_main(void)
{
	report_cpu();
	__atomic_fetch_add(&ap_done, 1, __ATOMIC_SEQ_CST);
}

static void delay(u64 n)
{
	for (volatile u64 i = 0; i < n; i++)
		;
}

static void lapic_ipi(u32 apic, u32 lo)
{
	wr32(LAPIC_BASE + LAPIC_ICR_HI, apic << 24);
	wr32(LAPIC_BASE + LAPIC_ICR_LO, lo);
}

struct start_ctx {
	u32 self;
};

static void start_ap(u32 index, u32 uid, u32 apic, u32 flags, void *p)
{
	struct start_ctx *c = p;
	(void)index;
	(void)uid;
	if (apic == c->self || !(flags & 1))
		return;
	u32 before = ap_done;
	ap_stack_top = (u64)ap_stack_area_top;
	lapic_ipi(apic, 0x4500);				/* INIT, level assert */
	delay(1000);
	lapic_ipi(apic, 0x4600 | (TRAMPOLINE >> 12)); /* STARTUP */
	delay(1000);
	lapic_ipi(apic, 0x4600 | (TRAMPOLINE >> 12)); /* STARTUP again, as the SDM asks */
	for (u64 spin = 0; ap_done == before; spin++) {
		if (spin > 200000000UL) {
			puts("APTIMEOUT");
			kv("apic", apic);
			puts("\n");
			return;
		}
	}
}

/* ---- main ---------------------------------------------------------------------- */

static volatile u64 counter __attribute__((aligned(64)));

static void power_off(struct acpi *t)
{
	/* FADT (ACPI 6.5 Table 5.9): SLEEP_CONTROL_REG is a GAS at offset 244, its
	 * address at 248. */
	if (t->fadt && rd32(t->fadt + 4) >= 256) {
		u64 port = rd64(t->fadt + 248);
		puts("POWEROFF");
		kv("port", port);
		puts("\n");
		outb((u16)port, (S5_SLEEP_TYPE << 2) | SLP_EN);
	}
	puts("NOPOWEROFF\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

void guest_main(u64 info, u32 proto)
{
	puts("\nHELLO tiny-guest\n");
	if (proto == 0)
		pvh_info(info);
	else
		bz_info(info);
	puts("CMDLINE ");
	puts(cmdline_text ? cmdline_text : "");
	puts("\n");

	struct acpi t;
	int ok = acpi_walk(rsdp_addr, &t, 1);
	if (!ok) {
		puts("NOACPI");
		kv("rsdp", rsdp_addr);
		puts("\n");
	}
	if (t.madt) {
		puts("MADT");
		kv("lapic", rd32(t.madt + 36));
		puts("\n");
	}
	if (t.srat) {
		u64 end = t.srat + rd32(t.srat + 4);
		for (u64 p = t.srat + 48; p + 2 <= end && rd8(p + 1) >= 2; p += rd8(p + 1))
			if (rd8(p) == 1) {
				puts("SRATMEM");
				kv("base", rd64(p + 8));
				kv("len", rd64(p + 16));
				kv("node", rd32(p + 2));
				kv("flags", rd32(p + 28));
				puts("\n");
			}
	}

	report_cpu();

	/* The APs, one at a time, from the trampoline copied to 0x10000. */
	memcpy((void *)TRAMPOLINE, trampoline, (u64)(trampoline_end - trampoline));
	struct start_ctx sc = {.self = lapic_id()};
	madt_each(t.madt, start_ap, &sc);
	puts("APS");
	kv("done", ap_done);
	puts("\n");

	if (cmdline_text && has_word(cmdline_text, "mode=triple")) {
		/* A triple fault on purpose: an empty IDT, then an exception that
		 * needs it (#BP -> #GP -> double fault -> shutdown). */
		struct {
			u16 limit;
			u64 base;
		} __attribute__((packed)) empty = {0, 0};
		puts("TRIPLE\n");
		__asm__ volatile("lidt %0; int3" : : "m"(empty));
	}
	if (cmdline_text && has_word(cmdline_text, "mode=count")) {
		puts("COUNTER");
		kv("addr", (u64)&counter);
		kv("cr3", read_cr3());
		puts("\n");
		for (;;)
			counter = counter + 1;
	}
	if (cmdline_text && has_word(cmdline_text, "mode=tick")) {
		/* Counts, and every 2^26 TSC cycles says so on COM2 with the first
		 * word of the payload region: what a save and restore must keep
		 * going (registers, memory, the serial port). */
		u64 pay = payload_addr(cmdline_text);
		puts("COUNTER");
		kv("addr", (u64)&counter);
		kv("cr3", read_cr3());
		kv("pay", pay);
		puts("\n");
		u64 last = rdtsc();
		for (;;) {
			counter = counter + 1;
			if (rdtsc() - last > (1UL << 26)) {
				last = rdtsc();
				puts("TICK");
				kv("n", counter);
				kv("pay", pay ? rd64(pay) : 0);
				puts("\n");
			}
		}
	}
	puts("END\n");
	power_off(&t);
}
