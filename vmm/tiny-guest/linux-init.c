/* /init of the KVM backend's Linux-boot tests (vmm/tests/kvm_linux.rs): a
 * static, libc-free program that reports what Linux made of the VM — each
 * CPU's package, die, core and LLC siblings, each node's CPUs and distances —
 * on the console, ticks for the steady test if asked (cmdline "ktstr_ticks=N"
 * arrives as an environment variable: no dot, or the kernel keeps it), writes
 * "ktstr_lines=N" numbered lines for the console-integrity test, and powers
 * off — or, with "ktstr_end=panic" or "ktstr_end=reboot", panics (sysrq c) or
 * restarts instead, for the tests of how the VM's end is seen. */

typedef unsigned long u64;
typedef long i64;

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_nanosleep 35
#define SYS_reboot 169
#define SYS_mount 165
#define O_RDONLY 0
#define O_RDWR 2
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc
#define LINUX_REBOOT_CMD_RESTART 0x01234567

static i64 sys(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e)
{
	i64 ret;
	register i64 r10 __asm__("r10") = d;
	register i64 r8 __asm__("r8") = e;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

static int out = 1;

static u64 len(const char *s)
{
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

static void put(const char *s) { sys(SYS_write, out, (i64)s, (i64)len(s), 0, 0); }

/* The first line of a file, without its newline; "?" when it cannot be read. */
static const char *line(const char *path, char *buf, u64 size)
{
	i64 fd = sys(SYS_open, (i64)path, O_RDONLY, 0, 0, 0);
	if (fd < 0)
		return "?";
	i64 n = sys(SYS_read, fd, (i64)buf, (i64)size - 1, 0, 0);
	sys(SYS_close, fd, 0, 0, 0, 0);
	if (n <= 0)
		return "?";
	buf[n] = 0;
	for (i64 i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = 0;
	for (i64 i = 0; buf[i]; i++)
		if (buf[i] == ' ')
			buf[i] = ',';
	return buf;
}

static char *cat(char *d, const char *s)
{
	while (*s)
		*d++ = *s++;
	*d = 0;
	return d;
}

static char *catnum(char *d, u64 v)
{
	char b[21];
	int i = 20;
	b[i] = 0;
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return cat(d, &b[i]);
}

static void putnum(u64 v)
{
	char b[21];
	catnum(b, v);
	put(b);
}

static void field(const char *key, const char *prefix, u64 n, const char *suffix)
{
	char path[128], buf[256];
	char *p = cat(path, prefix);
	p = catnum(p, n);
	cat(p, suffix);
	put(" ");
	put(key);
	put("=");
	put(line(path, buf, sizeof(buf)));
}

static u64 parse(const char *s)
{
	u64 v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (u64)(*s++ - '0');
	return v;
}

static int starts(const char *s, const char *p)
{
	while (*p)
		if (*s++ != *p++)
			return 0;
	return 1;
}

void start(u64 *sp)
{
	i64 argc = (i64)sp[0];
	char **envp = (char **)(sp + argc + 2);
	sys(SYS_mount, (i64)"devtmpfs", (i64)"/dev", (i64)"devtmpfs", 0, 0);
	sys(SYS_mount, (i64)"sysfs", (i64)"/sys", (i64)"sysfs", 0, 0);
	sys(SYS_mount, (i64)"proc", (i64)"/proc", (i64)"proc", 0, 0);
	i64 fd = sys(SYS_open, (i64)"/dev/console", O_RDWR, 0, 0, 0);
	if (fd >= 0)
		out = (int)fd;
	put("KTSTR-INIT hello\n");

	char buf[64];
	/* "0" or "0-N" */
	const char *possible = line("/sys/devices/system/cpu/possible", buf, sizeof(buf));
	const char *dash = possible;
	while (*dash && *dash != '-')
		dash++;
	u64 ncpu = (*dash ? parse(dash + 1) : parse(possible)) + 1;
	for (u64 c = 0; c < ncpu; c++) {
		put("KTSTR-CPU cpu=");
		putnum(c);
		field("online", "/sys/devices/system/cpu/cpu", c, "/online");
		field("package", "/sys/devices/system/cpu/cpu", c, "/topology/physical_package_id");
		field("die", "/sys/devices/system/cpu/cpu", c, "/topology/die_id");
		field("core", "/sys/devices/system/cpu/cpu", c, "/topology/core_id");
		field("smt", "/sys/devices/system/cpu/cpu", c, "/topology/thread_siblings_list");
		field("llc", "/sys/devices/system/cpu/cpu", c, "/cache/index3/shared_cpu_list");
		put("\n");
	}
	for (u64 n = 0; n < 8; n++) {
		char path[96];
		catnum(cat(path, "/sys/devices/system/node/node"), n);
		cat(path + len(path), "/cpulist");
		char b2[256];
		const char *cpus = line(path, b2, sizeof(b2));
		if (cpus[0] == '?')
			break;
		put("KTSTR-NODE node=");
		putnum(n);
		put(" cpus=");
		put(cpus);
		field("distance", "/sys/devices/system/node/node", n, "/distance");
		put("\n");
	}

	u64 ticks = 0;
	for (char **e = envp; *e; e++)
		if (starts(*e, "ktstr_ticks="))
			ticks = parse(*e + 12);
	for (u64 t = 0; t < ticks; t++) {
		struct {
			i64 s, ns;
		} ts = {0, 100000000};
		sys(SYS_nanosleep, (i64)&ts, 0, 0, 0, 0);
		put("KTSTR-TICK ");
		putnum(t);
		put("\n");
	}
	u64 lines = 0;
	const char *end = "";
	for (char **e = envp; *e; e++) {
		if (starts(*e, "ktstr_lines="))
			lines = parse(*e + 12);
		if (starts(*e, "ktstr_end="))
			end = *e + 10;
	}
	/* One write per line, as a shell's echo does: each goes through the tty
	 * layer and the UART's transmit interrupt. */
	for (u64 l = 0; l < lines; l++) {
		char b[160];
		char *p = catnum(cat(b, "KTSTR-LINE "), l);
		p = cat(p, " abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-");
		p = catnum(p, l * 7919 % 10007);
		cat(p, "\n");
		put(b);
	}
	put("KTSTR-DONE\n");
	if (starts(end, "panic")) {
		i64 fd = sys(SYS_open, (i64)"/proc/sysrq-trigger", O_RDWR, 0, 0, 0);
		sys(SYS_write, fd, (i64)"c", 1, 0, 0);
	}
	if (starts(end, "reboot"))
		sys(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0, 0);
	sys(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0, 0);
	for (;;)
		;
}

__asm__(".globl _start\n"
	"_start:\n"
	"  mov %rsp, %rdi\n"
	"  and $-16, %rsp\n"
	"  call start\n"
	"  hlt\n");
