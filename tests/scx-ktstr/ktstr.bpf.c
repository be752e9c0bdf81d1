/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * scx-ktstr: ktstr's fixture sched_ext scheduler.
 *
 * A global FIFO in FULL mode (no SCX_OPS_SWITCH_PARTIAL: every fair task is
 * scheduled here). Tasks are queued on one shared DSQ and every CPU pulls
 * from it in ktstr_dispatch. The loader (main.rs) steers failure modes
 * through the `ktstr_ctl` record in .bss while the scheduler runs:
 *   stall   - ktstr_dispatch stops pulling, so runnable tasks wait until the
 *             kernel's watchdog ejects us with SCX_EXIT_ERROR_STALL;
 *   crash   - the next callback calls scx_bpf_error() (SCX_EXIT_ERROR_BPF);
 *   slow_ns - ktstr_dispatch spins this long before pulling a queued task;
 *   no_count - ktstr_dispatch still dispatches but never counts it (a
 *             bind-without-dispatch regression, as the host monitor sees it);
 *   fail_init - ktstr_init fails, so the kernel ejects us while attaching.
 * and through `ktstr_pin`/`ktstr_pin_n` (--pin-by-pid), a planted placement
 * bug: user tasks stay on a CPU chosen by pid, whatever the load.
 * ktstr_exit copies the kernel's exit info into `ktstr_exit_rec` for the
 * loader to print. `nr_enqueued`/`nr_dispatched` are read by the loader and,
 * by name through BTF, by the host-side monitor; the loader prints
 * `nr_select_cpu` with them (a failure dump's counters are checked against
 * its last report). `ktstr_mark` (set once by the loader's --mark) is never
 * printed: the host's monitor tests read it from guest memory only.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* The sched_ext kfuncs are GPL-only: the license must say so. */
char _license[] SEC("license") = "GPL";

/* The shared DSQ. Custom DSQ ids are any value without SCX_DSQ_FLAG_BUILTIN. */
#define KTSTR_DSQ 0

/* The DSQ tasks queue on: KTSTR_DSQ, or SCX_DSQ_GLOBAL where it cannot be created. */
u64 ktstr_dsq = KTSTR_DSQ;

/* A DSQ id nothing creates: inserting there is an error exit. */
#define KTSTR_NO_DSQ 0x7ff00000ULL

/* Longest spin of --slow, whatever the loader asks: keep a CPU usable. */
#define KTSTR_SLOW_MAX_NS (10ULL * 1000 * 1000)

/*
 * The kfuncs used, as 7.3 declares them in its BTF (`bpftool btf dump file
 * vmlinux | grep "FUNC 'scx_bpf_"`), and 6.12's older names.
 */
/*
 * Weak: Debian's 7.2.x kernels declare scx_bpf_create_dsq and
 * scx_bpf_error_bstr in their BTF with a third (fourth) argument, the
 * calling program's aux, which the verifier fills in itself from the
 * `_impl` twin of the kfunc -- and their BTF has no `_impl` twin ("cannot
 * find function scx_bpf_error_bstr_impl in BTF"), so no program can call
 * them there. libbpf leaves a weak kfunc whose prototype does not match
 * unresolved, bpf_ksym_exists() says so, and the verifier accepts the call
 * in dead code. Without them this scheduler queues on the built-in global
 * DSQ (which the kernel moves to a CPU itself: dispatch only counts) and
 * crashes by inserting into a DSQ that does not exist.
 */
extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym __weak;
/*
 * Linux 6.13 renamed scx_bpf_dispatch to scx_bpf_dsq_insert and
 * scx_bpf_consume to scx_bpf_dsq_move_to_local (6.12 has only the old names,
 * 7.x only the new). All four are weak: libbpf resolves the ones the kernel
 * has, bpf_ksym_exists() picks, and the verifier drops the other branch.
 */
extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice,
			       u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice,
			     u64 enq_flags) __ksym __weak;
extern bool scx_bpf_consume(u64 dsq_id) __ksym __weak;
extern s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
extern s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu,
				  u64 wake_flags, bool *is_idle) __ksym;
extern void scx_bpf_error_bstr(char *fmt, unsigned long long *data,
			       u32 data__sz) __ksym __weak;

extern void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym __weak;
extern bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym __weak;

static __always_inline void ktstr_insert(struct task_struct *p, u64 dsq_id,
					 u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
}

static __always_inline bool ktstr_move_to_local(u64 dsq_id)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local))
		return scx_bpf_dsq_move_to_local(dsq_id);
	return scx_bpf_consume(dsq_id);
}

/* One struct_ops callback; sleepable ones go to "struct_ops.s/". */
#define KTSTR_OP(name, args...) SEC("struct_ops/" #name) BPF_PROG(name, ##args)
#define KTSTR_OP_SLEEPABLE(name, args...) \
	SEC("struct_ops.s/" #name) BPF_PROG(name, ##args)

/*
 * From the kernel config, as many published schedulers read it: libbpf
 * resolves __kconfig externs from /proc/config.gz or /boot/config-$(uname -r)
 * at load time, so this scheduler only loads where the guest offers one.
 */
extern unsigned int CONFIG_HZ __kconfig;
u64 kconfig_hz;

/* Counters: plain globals so the monitor finds them by name in .bss. */
u64 nr_enqueued;
u64 nr_dispatched;
u64 nr_select_cpu;
u64 ktstr_mark;
#ifdef KTSTR_PLANTED_COMPLEXITY
u64 ktstr_planted;
#endif

/*
 * Per task (by pid): how often it was enqueued and where it last woke. The
 * host's failure dump shows a hash map's entries with their keys from it.
 */
struct ktstr_task_stat {
	u64 enqueues;
	s32 last_cpu;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct ktstr_task_stat);
} ktstr_tasks SEC(".maps");

#ifdef KTSTR_ARENA
/*
 * A BPF arena with KTSTR_ARENA_PAGES pages allocated at init (the `--arena`
 * build): the failure dump counts the pages an arena has in use.
 */
#define KTSTR_ARENA_PAGES 5
struct {
	__uint(type, BPF_MAP_TYPE_ARENA);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 64); /* pages */
} ktstr_arena SEC(".maps");

extern void *bpf_arena_alloc_pages(void *map, void *addr, u32 page_cnt,
				   int node_id, u64 flags) __ksym __weak;
#endif

/* Written by the loader through the mmapped .bss while we run. */
struct ktstr_ctl {
	u32 stall;
	u32 crash;
	u64 slow_ns;
	/* A planted fairness bug: odd pids get a 4x longer slice. */
	u32 unfair;
	u32 no_count;
	/* ktstr_init fails: an error exit before any task is scheduled. */
	u32 fail_init;
};
struct ktstr_ctl ktstr_ctl;

/* Sizes as the kernel's (SCX_EXIT_REASON_LEN is a string, msg is 1024). */
#define KTSTR_EXIT_REASON_LEN 128
#define KTSTR_EXIT_MSG_LEN 1024

/* Filled by ktstr_exit; `done` is written last. Mirrored in main.rs. */
struct ktstr_exit_rec {
	s32 kind;
	u32 done;
	s64 exit_code;
	char reason[KTSTR_EXIT_REASON_LEN];
	char msg[KTSTR_EXIT_MSG_LEN];
};
struct ktstr_exit_rec ktstr_exit_rec;

/* The fixed message of --crash-after, recognizable in the exit info. */
static char crash_fmt[] = "scx-ktstr: crash requested (nr_dispatched=%llu)";

static void maybe_crash(void)
{
	unsigned long long data[1];

	if (!ktstr_ctl.crash)
		return;
	data[0] = nr_dispatched;
	if (bpf_ksym_exists(scx_bpf_error_bstr))
		scx_bpf_error_bstr(crash_fmt, data, sizeof(data));
	else
		ktstr_dsq = KTSTR_NO_DSQ;
}

/*
 * A planted placement bug (--pin-by-pid): a user task with pid P runs only on
 * CPU ktstr_pin[P % ktstr_pin_n], however busy that CPU is. Each such CPU has
 * its own DSQ (KTSTR_PIN_DSQ + cpu) that only it consumes, so nothing ever
 * moves a task elsewhere. With CPUs 0,1,0,1,0,1,2,3 on two nodes of two CPUs,
 * eight consecutive pids put six tasks on node 0 and one on each CPU of node
 * 1: a NUMA-blind scheduler that never rebalances. The loader writes the
 * table before attaching; ktstr_pin_n 0 turns it off.
 */
#define KTSTR_PIN_MAX 16
#define KTSTR_PIN_DSQ 0x100
#define KTSTR_PF_KTHREAD 0x00200000
u32 ktstr_pin_n;
s32 ktstr_pin[KTSTR_PIN_MAX];

/* The CPU --pin-by-pid keeps @p on, or -1: off, a kernel thread, or a CPU
 * @p may not use (its cpumask wins). */
static s32 pinned_cpu(struct task_struct *p)
{
	u32 n = ktstr_pin_n, i;
	s32 cpu;

	if (!n || n > KTSTR_PIN_MAX || (p->flags & KTSTR_PF_KTHREAD) ||
	    !bpf_ksym_exists(bpf_cpumask_test_cpu) || ktstr_dsq == SCX_DSQ_GLOBAL)
		return -1;
	/*
	 * i < n <= KTSTR_PIN_MAX (a power of two): the mask changes nothing but
	 * shows the verifier the bound, which it cannot derive from %. The empty
	 * asm hides i's range from clang, which would drop the mask.
	 */
	i = (u32)p->pid % n;
	asm volatile("" : "+r"(i));
	i &= KTSTR_PIN_MAX - 1;
	cpu = ktstr_pin[i];
	if (cpu < 0 || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return -1;
	return cpu;
}

struct spin_ctx {
	u64 until;
};

static long spin_step(u64 index, void *arg)
{
	struct spin_ctx *ctx = arg;

	/* 1 stops bpf_loop. */
	return bpf_ktime_get_ns() >= ctx->until;
}

s32 KTSTR_OP(ktstr_select_cpu, struct task_struct *p, s32 prev_cpu,
	     u64 wake_flags)
{
	bool is_idle = false;
	s32 pin = pinned_cpu(p);

	__sync_fetch_and_add(&nr_select_cpu, 1);
	if (pin >= 0)
		return pin;
	/*
	 * Wake the task on an idle CPU if there is one, but do not insert it
	 * there directly: every task must go through ktstr_enqueue and the
	 * shared DSQ, so the counters and the failure modes see all of them.
	 */
	return scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
}

/*
 * A planted race (--race-window-ns N, written after attaching): a shared slot
 * that ktstr_enqueue updates without a lock, remembering which CPU enqueued
 * last and when. Two CPUs enqueueing within N ns of each other "corrupt" it,
 * and the scheduler errors out. Whether that happens depends on when the
 * CPUs run, not on a count: some runs crash and others do not, the kind of
 * failure a recording keeps (README: record and replay).
 */
u64 ktstr_race_ns;
static u64 race_last_ns;
static s64 race_last_cpu = -1;
static char race_fmt[] = "scx-ktstr: planted race: cpus %llu and %llu enqueued %llu ns apart";

static void race_check(void)
{
	unsigned long long data[3];
	u64 window = ktstr_race_ns, now, last;
	s64 cpu, last_cpu;

	if (!window)
		return;
	now = bpf_ktime_get_ns();
	cpu = bpf_get_smp_processor_id();
	last = race_last_ns;
	last_cpu = race_last_cpu;
	race_last_ns = now;
	race_last_cpu = cpu;
	if (last_cpu < 0 || last_cpu == cpu || now < last || now - last >= window)
		return;
	data[0] = last_cpu;
	data[1] = cpu;
	data[2] = now - last;
	if (bpf_ksym_exists(scx_bpf_error_bstr))
		scx_bpf_error_bstr(race_fmt, data, sizeof(data));
	else
		ktstr_dsq = KTSTR_NO_DSQ;
}

void KTSTR_OP(ktstr_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 slice = SCX_SLICE_DFL;
	s32 pin = pinned_cpu(p);

	u32 pid = p->pid;
	struct ktstr_task_stat *ts;

	__sync_fetch_and_add(&nr_enqueued, 1);
	ts = bpf_map_lookup_elem(&ktstr_tasks, &pid);
	if (ts) {
		__sync_fetch_and_add(&ts->enqueues, 1);
		ts->last_cpu = bpf_get_smp_processor_id();
	} else {
		struct ktstr_task_stat init = {
			.enqueues = 1,
			.last_cpu = bpf_get_smp_processor_id(),
		};

		/* Full: the task goes uncounted, never unscheduled. */
		bpf_map_update_elem(&ktstr_tasks, &pid, &init, BPF_NOEXIST);
	}
#ifdef KTSTR_PLANTED_COMPLEXITY
	/*
	 * The planted regression of the copy built as ktstr_planted.bpf.o
	 * (loaded with --planted-complexity): an unrolled loop that multiplies
	 * the instructions the verifier walks through in this program.
	 */
	{
		u64 h = pid;
		int i;

#pragma unroll
		for (i = 0; i < 64; i++)
			h = (h ^ (h >> 7)) * 31 + i;
		ktstr_planted = h;
	}
#endif
#ifdef KTSTR_PLANTED_REJECT
	/*
	 * The planted rejection of the copy built as ktstr_rejected.bpf.o
	 * (loaded with --planted-reject): a scalar dereferenced as a pointer,
	 * which the verifier refuses ("invalid mem access 'scalar'").
	 */
	nr_enqueued += *(volatile u64 *)(unsigned long)pid;
#endif
	race_check();
	if (ktstr_ctl.unfair)
		slice = (p->pid & 1) ? 8000000ULL : 2000000ULL;
	if (pin >= 0) {
		ktstr_insert(p, KTSTR_PIN_DSQ + pin, slice, enq_flags);
		if (bpf_ksym_exists(scx_bpf_kick_cpu))
			scx_bpf_kick_cpu(pin, SCX_KICK_IDLE);
		maybe_crash();
		return;
	}
	ktstr_insert(p, ktstr_dsq, slice, enq_flags);
	maybe_crash();
}

void KTSTR_OP(ktstr_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 slow_ns = ktstr_ctl.slow_ns;

	maybe_crash();
	if (ktstr_ctl.stall)
		return;
	/* Slow down handing out tasks, not idle CPUs looking for none. */
	if (slow_ns && ktstr_dsq != SCX_DSQ_GLOBAL && scx_bpf_dsq_nr_queued(ktstr_dsq) > 0) {
		struct spin_ctx ctx;

		if (slow_ns > KTSTR_SLOW_MAX_NS)
			slow_ns = KTSTR_SLOW_MAX_NS;
		ctx.until = bpf_ktime_get_ns() + slow_ns;
		/* The iteration bound is a backstop; the deadline ends it. */
		bpf_loop(1 << 20, spin_step, &ctx, 0);
	}
	if (ktstr_dsq == SCX_DSQ_GLOBAL) {
		/* The kernel consumes the global DSQ; only user DSQs move here. */
		if (!ktstr_ctl.no_count)
			__sync_fetch_and_add(&nr_dispatched, 1);
		return;
	}
	if (ktstr_move_to_local(ktstr_dsq)) {
		if (!ktstr_ctl.no_count)
			__sync_fetch_and_add(&nr_dispatched, 1);
		return;
	}
	/* Pinned tasks after the shared DSQ: kernel threads must not starve. */
	if (ktstr_pin_n && cpu < KTSTR_PIN_MAX &&
	    ktstr_move_to_local(KTSTR_PIN_DSQ + cpu) && !ktstr_ctl.no_count)
		__sync_fetch_and_add(&nr_dispatched, 1);
}

s32 KTSTR_OP_SLEEPABLE(ktstr_init)
{
	kconfig_hz = CONFIG_HZ;
	if (ktstr_ctl.fail_init)
		return -22; /* -EINVAL: "ops.init() failed", SCX_EXIT_ERROR */
#ifdef KTSTR_ARENA
	/* NUMA_NO_NODE; the pages are only counted, never touched here. */
	if (!bpf_arena_alloc_pages(&ktstr_arena, NULL, KTSTR_ARENA_PAGES, -1, 0))
		return -12; /* -ENOMEM */
#endif
	if (!bpf_ksym_exists(scx_bpf_create_dsq)) {
		ktstr_dsq = SCX_DSQ_GLOBAL;
		return 0;
	}
	if (ktstr_pin_n) {
		s32 i, err;

		for (i = 0; i < KTSTR_PIN_MAX; i++) {
			err = scx_bpf_create_dsq(KTSTR_PIN_DSQ + i, -1);
			if (err)
				return err;
		}
	}
	return scx_bpf_create_dsq(KTSTR_DSQ, -1);
}

void KTSTR_OP(ktstr_exit, struct scx_exit_info *ei)
{
	ktstr_exit_rec.kind = ei->kind;
	ktstr_exit_rec.exit_code = ei->exit_code;
	bpf_probe_read_kernel_str(ktstr_exit_rec.reason,
				  sizeof(ktstr_exit_rec.reason), ei->reason);
	bpf_probe_read_kernel_str(ktstr_exit_rec.msg,
				  sizeof(ktstr_exit_rec.msg), ei->msg);
	ktstr_exit_rec.done = 1;
}

/* The loader overwrites timeout_ms (--timeout-ms) before loading. */
SEC(".struct_ops.link")
struct sched_ext_ops ktstr = {
	.select_cpu = (void *)ktstr_select_cpu,
	.enqueue = (void *)ktstr_enqueue,
	.dispatch = (void *)ktstr_dispatch,
	.init = (void *)ktstr_init,
	.exit = (void *)ktstr_exit,
	.timeout_ms = 3000,
	.name = "ktstr",
};
