//! Host-only decoding of probe records over a crafted kernel BTF: every
//! field kind (ints, strings, CPU masks behind pointers, enum names, flags,
//! nested members, a pointer chased to a nested struct), the fetch
//! arguments the plan writes, and bad records giving error values.
#![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.

use ktstr_btf::{Btf, BtfBuilder};
use ktstr_probe::fields::{ArgKind, RawValue, TASK_FIELDS, decode};
use ktstr_probe::guest::Capture;
use ktstr_probe::{CrashInfo, Plan, View};

const BUILTIN: u64 = 1 << 63;

/// A small kernel: task_struct, rq, cpumask, the sched_ext enums and two functions.
fn kernel_btf() -> Vec<u8> {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let u32_ = b.int("unsigned int", 4, false);
    let u64_ = b.int("long long unsigned int", 8, false);
    let ulong = b.int("long unsigned int", 8, false);
    let ch = b.int_encoded("char", 1, 2, 0, 8);
    let comm = b.array(ch, int, 16);
    let bits = b.array(ulong, int, 1);
    let cpumask = b.struct_type("cpumask", 8, &[("bits", bits, 0, 0)]);
    let cpumask_p = b.ptr(cpumask);
    let dsq = b.struct_type(
        "scx_dispatch_q",
        16,
        &[("nr", u32_, 0, 0), ("id", u64_, 64, 0)],
    );
    let dsq_p = b.ptr(dsq);
    let see = b.struct_type(
        "sched_ext_entity",
        32,
        &[
            ("dsq", dsq_p, 0, 0),
            ("ddsp_dsq_id", u64_, 64, 0),
            ("flags", u32_, 128, 0),
            ("slice", u64_, 192, 0),
        ],
    );
    let task = b.struct_type(
        "task_struct",
        72,
        &[
            ("pid", int, 0, 0),
            ("comm", comm, 32, 0),
            ("cpus_ptr", cpumask_p, 192, 0),
            ("scx", see, 256, 0),
        ],
    );
    let task_p = b.ptr(task);
    let scx_rq = b.struct_type("scx_rq", 4, &[("nr_running", u32_, 0, 0)]);
    let rq = b.struct_type(
        "rq",
        12,
        &[
            ("cpu", int, 0, 0),
            ("nr_running", u32_, 32, 0),
            ("scx", scx_rq, 64, 0),
        ],
    );
    let rq_p = b.ptr(rq);
    b.enum64_type(
        "scx_dsq_id_flags",
        8,
        false,
        &[
            ("SCX_DSQ_FLAG_BUILTIN", BUILTIN),
            ("SCX_DSQ_INVALID", BUILTIN),
            ("SCX_DSQ_GLOBAL", BUILTIN | 1),
            ("SCX_DSQ_LOCAL", BUILTIN | 2),
        ],
    );
    b.enum_type(
        "scx_ent_flags",
        4,
        false,
        &[
            ("SCX_TASK_QUEUED", 1),
            ("SCX_TASK_DEQD_FOR_SLEEP", 8),
            ("SCX_TASK_STATE_MASK", 0x300),
        ],
    );
    let void = ktstr_btf::TypeId(0);
    let proto = b.func_proto(void, &[("rq", rq_p), ("p", task_p), ("enq_flags", u64_)]);
    b.func("enqueue_task_scx", proto, 0);
    let proto2 = b.func_proto(void, &[("cpu", int)]);
    b.func("no_task_here", proto2, 0);
    b.finish()
}

fn field(label: &str) -> &'static ktstr_probe::fields::FieldSpec {
    TASK_FIELDS.iter().find(|f| f.label == label).unwrap()
}

#[test]
fn every_field_kind_decodes() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let show =
        |label: &str, raw: RawValue| decode(&btf, ArgKind::Task, field(label), &raw).to_string();
    assert_eq!(show("pid", RawValue::Num(97)), "97");
    assert_eq!(show("comm", RawValue::Str("stress-ng".into())), "stress-ng");
    assert_eq!(show("cpus_ptr", RawValue::Num(0xf)), "0xf(0-3)");
    assert_eq!(show("cpus_ptr", RawValue::Num(0b101_0011)), "0x53(0-1,4,6)");
    assert_eq!(show("dsq_id", RawValue::Num(BUILTIN | 2)), "SCX_DSQ_LOCAL");
    assert_eq!(show("dsq_id", RawValue::Fault), "-", "a NULL dsq pointer");
    assert_eq!(
        show("ddsp_dsq_id", RawValue::Num(BUILTIN)),
        "SCX_DSQ_INVALID"
    );
    assert_eq!(show("ddsp_dsq_id", RawValue::Num(7)), "0x7", "a custom DSQ");
    assert_eq!(show("scx_flags", RawValue::Num(9)), "QUEUED|DEQD_FOR_SLEEP");
    assert_eq!(show("scx_flags", RawValue::Num(0x401)), "QUEUED|0x400");
    assert_eq!(show("slice", RawValue::Num(20_000_000)), "20000000");
    let rq = |label: &str, raw| {
        let spec = ArgKind::Rq
            .fields()
            .iter()
            .find(|f| f.label == label)
            .unwrap();
        decode(&btf, ArgKind::Rq, spec, &raw).to_string()
    };
    assert_eq!(rq("cpu", RawValue::Num(1)), "1");
    assert_eq!(
        rq("scx_nr_running", RawValue::Num(3)),
        "3",
        "a nested member"
    );
}

#[test]
fn bad_records_give_error_values() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let show =
        |label: &str, raw: RawValue| decode(&btf, ArgKind::Task, field(label), &raw).to_string();
    assert!(show("pid", RawValue::Str("x".into())).starts_with("<error:"));
    assert!(
        show("pid", RawValue::Num(1 << 40)).starts_with("<error:"),
        "too wide for an int"
    );
    assert!(show("scx_flags", RawValue::Num(1 << 40)).starts_with("<error:"));
    assert!(show("comm", RawValue::Num(3)).starts_with("<error:"));
    // A BTF without the sched_ext enums: an error value, not a panic.
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    b.struct_type("task_struct", 4, &[("pid", int, 0, 0)]);
    let bare = b.finish();
    let bare = Btf::parse(&bare).unwrap();
    let v = decode(&bare, ArgKind::Task, field("scx_flags"), &RawValue::Num(1)).to_string();
    assert!(v.starts_with("<error:"), "{v}");
}

#[test]
fn the_plan_reads_fields_at_btf_offsets() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let plan = Plan::for_functions(&btf, ["enqueue_task_scx", "no_task_here", "unknown"]).unwrap();
    assert_eq!(
        plan.probes.len(),
        1,
        "only functions with a task or rq argument"
    );
    let p = &plan.probes[0];
    assert!(
        p.entry_def.starts_with("f:ktstr/kp0e enqueue_task_scx "),
        "{}",
        p.entry_def
    );
    assert!(
        p.exit_def
            .starts_with("f:ktstr/kp0x enqueue_task_scx%return "),
        "{}",
        p.exit_def
    );
    for want in [
        "a2f0=+0($arg2):x32",
        "a2f1=+4($arg2):string",
        "a2f2=+0(+24($arg2)):x64",
        "a2f3=+8(+32($arg2)):x64 a2f3p=+32($arg2):x64",
        "a2f5=+48($arg2):x32",
        "a1f0=+0($arg1):x32",
        "a1f2=+8($arg1):x32",
    ] {
        assert!(p.entry_def.contains(want), "{want} not in {}", p.entry_def);
    }
}

#[test]
fn records_render_the_triggering_task_with_changes() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let plan = Plan::for_functions(&btf, ["enqueue_task_scx"]).unwrap();
    let line = |ts: &str, cpu: u32, ev: &str, pid: u32, dsq: u64, flags: u32| {
        // DSQ 0 is a custom DSQ; a NULL dsq pointer reads as 0 too.
        let ptr: u64 = if dsq == 0 { 0 } else { 0xffff_8880_0000_1000 };
        format!(
            "sh-{pid} [{cpu:03}] d..2. {ts}: {ev}: (enqueue_task_scx+0x0/0x10) a1f0=0x{cpu:x} a1f1=0x1 a1f2=0x1 \
             a2f0=0x{pid:x} a2f1=\"sh\" a2f2=0xf a2f3=0x{dsq:x} a2f3p=0x{ptr:x} a2f4=0x{BUILTIN:x} a2f5=0x{flags:x} a2f6=0x0"
        )
    };
    let cap = Capture {
        installed: vec!["enqueue_task_scx".into()],
        errors: vec![],
        lines: vec![
            line("1.000000", 0, "kp0e", 50, BUILTIN, 0),
            line("1.000010", 0, "kp0x", 50, BUILTIN | 1, 1),
            line("2.000000", 1, "kp0e", 97, 0, 8),
            line("2.000010", 1, "kp0x", 97, BUILTIN | 2, 1),
            "garbage line".into(),
            "init-1 [001] d..2. 2.000020: sched_ext_exit: kind=1025".into(),
        ],
        dropped: 0,
    };
    let view = View::new(&btf, &plan, &cap);
    assert_eq!(view.skipped, 1);
    let located = |f: &str| -> Result<String, String> {
        match f {
            "enqueue_task_scx" => Ok("kernel/sched/ext/ext.c:2172".into()),
            _ => Err("no index".into()),
        }
    };
    let out = view.render(&CrashInfo::default(), &[], &located);
    assert!(out.contains("triggering task: pid 97"), "{out}");
    assert!(
        !out.contains("pid            50"),
        "another task's call: {out}"
    );
    assert!(out.contains("cpus_ptr       0xf(0-3)"), "{out}");
    assert!(
        out.contains("dsq_id         -                        →  SCX_DSQ_LOCAL"),
        "{out}"
    );
    assert!(
        out.contains("scx_flags      DEQD_FOR_SLEEP           →  QUEUED"),
        "{out}"
    );
    assert!(
        out.contains("rq *rq") && out.contains("cpu            1"),
        "{out}"
    );
    assert!(out.contains("exit on cpu 1"), "{out}");
    assert!(
        out.contains("  enqueue_task_scx") && out.contains("kernel/sched/ext/ext.c:2172\n"),
        "the function's entry line: {out}"
    );
    // Without an index: no line, and the reason once.
    let out = view.render(&CrashInfo::default(), &[], &|_| Err("not cached"));
    assert!(!out.contains("ext.c:"), "{out}");
    assert!(
        out.contains("no file:line for kernel functions: not cached"),
        "{out}"
    );
    // A stall names its task: that one is followed.
    let stall = CrashInfo {
        reason: "runnable task stall".into(),
        message: Some("sh[50] failed to run for 3.1s".into()),
        frames: vec![],
    };
    let out = view.render(&stall, &[], &located);
    assert!(
        out.contains("triggering task: pid 50 (named by the stall)"),
        "{out}"
    );
    // Nothing captured: said so.
    let empty = View::new(&btf, &plan, &Capture::default());
    assert!(
        empty
            .render(&CrashInfo::default(), &[], &located)
            .contains("trace buffer was empty")
    );
}

/// A trace line of `enqueue_task_scx` (probe 0 of a plan) for task `pid`.
fn enqueue_line(ts: &str, cpu: u32, ev: &str, pid: u32, dsq: u64, flags: u32) -> String {
    let ptr: u64 = if dsq == 0 { 0 } else { 0xffff_8880_0000_1000 };
    format!(
        "sh-{pid} [{cpu:03}] d..2. {ts}: {ev}: (enqueue_task_scx+0x0/0x10) a1f0=0x{cpu:x} a1f1=0x1 a1f2=0x1 \
         a2f0=0x{pid:x} a2f1=\"sh\" a2f2=0xf a2f3=0x{dsq:x} a2f3p=0x{ptr:x} a2f4=0x{BUILTIN:x} a2f5=0x{flags:x} a2f6=0x0"
    )
}

#[test]
fn an_unknown_name_is_an_error_naming_it_and_close_names() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let err = Plan::on_request(&btf, &["enqueue_task_sxc"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`enqueue_task_sxc`"), "{err}");
    assert!(err.contains("close: enqueue_task_scx"), "{err}");
    assert!(err.contains("ktstr probe list"), "{err}");
    let many: Vec<&str> = std::iter::repeat_n("enqueue_task_scx", 17).collect();
    let err = Plan::on_request(&btf, &many, &[]).unwrap_err().to_string();
    assert!(err.contains("at most 16"), "{err}");
}

/// The callback a crafted scheduler `mine` declares: `enqueue`, at line 12.
fn mine_enqueue() -> ktstr_probe::bpf_obj::Callback {
    ktstr_probe::bpf_obj::Callback {
        name: "mine_enqueue".into(),
        section: "struct_ops/mine_enqueue".into(),
        location: "mine.bpf.c:12".into(),
    }
}

#[test]
fn requested_functions_callbacks_and_argless_functions_are_planned() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let cb = mine_enqueue();
    let plan = Plan::on_request(
        &btf,
        &["no_task_here", "mine_enqueue", "enqueue_task_scx"],
        std::slice::from_ref(&cb),
    )
    .unwrap();
    let funcs: Vec<&str> = plan.probes.iter().map(|p| p.func.as_str()).collect();
    assert_eq!(
        funcs,
        ["no_task_here", "enqueue_task_scx"],
        "the caller once"
    );
    assert_eq!(plan.probes[0].entry_def, "f:ktstr/kp0e no_task_here");
    assert_eq!(plan.probes[0].exit_def, "f:ktstr/kp0x no_task_here%return");
    assert_eq!(plan.callbacks[0].caller, "enqueue_task_scx");
    assert_eq!(
        plan.requested,
        ["no_task_here", "mine_enqueue", "enqueue_task_scx"]
    );
    let listed = ktstr_probe::probeable(&btf, "task");
    assert_eq!(
        listed,
        ["enqueue_task_scx(rq *rq, task_struct *p)", "no_task_here()"]
    );
}

#[test]
fn the_report_shows_the_last_calls_of_each_requested_name() {
    let data = kernel_btf();
    let btf = Btf::parse(&data).unwrap();
    let cb = mine_enqueue();
    let plan = Plan::on_request(
        &btf,
        &["enqueue_task_scx", "mine_enqueue", "no_task_here"],
        std::slice::from_ref(&cb),
    )
    .unwrap();
    let mut lines = Vec::new();
    for i in 0..5u32 {
        let ts = format!("{}.000000", i + 1);
        let ts2 = format!("{}.000010", i + 1);
        lines.push(enqueue_line(&ts, i % 2, "kp0e", 100 + i, 0, 8));
        lines.push(enqueue_line(&ts2, i % 2, "kp0x", 100 + i, BUILTIN | 2, 1));
    }
    lines.push("x-1 [000] d..2. 9.5: kp1e: (no_task_here+0x0/0x10)".into());
    lines.push("bad".into());
    let cap = Capture {
        installed: vec![],
        errors: vec![],
        lines,
        dropped: 0,
    };
    let view = View::new(&btf, &plan, &cap);
    let located = |f: &str| -> Result<String, String> {
        if f == "enqueue_task_scx" {
            Ok("kernel/sched/ext.c:1410".into())
        } else {
            Err("not in the index".into())
        }
    };
    let r = view.report(std::slice::from_ref(&cb), &located);
    assert_eq!((r.records, r.unreadable), (11, 1));
    assert_eq!(r.calls_of("enqueue_task_scx").count(), 5);
    assert_eq!(r.calls_of("mine_enqueue").count(), 5);
    let last = r.calls_of("enqueue_task_scx").last().unwrap();
    assert_eq!(last.pid, Some(104));
    let dsq = last.field("dsq_id").unwrap();
    assert_eq!(
        (dsq.entry.as_str(), dsq.exit.as_deref()),
        ("-", Some("SCX_DSQ_LOCAL"))
    );
    let t = &r.text;
    assert!(
        t.starts_with(
            "=== PROBES (on request): enqueue_task_scx, mine_enqueue, no_task_here ===\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("enqueue_task_scx: 5 calls in the records; the last 3, in time order:"),
        "{t}"
    );
    // Bounded: the first two calls are counted, not printed.
    assert!(!t.contains("pid            100\n"), "{t}");
    assert!(t.contains("pid            104\n"), "{t}");
    assert!(t.contains("kernel/sched/ext.c:1410"), "{t}");
    assert!(
        t.contains("mine_enqueue") && t.contains("mine.bpf.c:12"),
        "{t}"
    );
    assert!(
        t.contains("(BPF callback: its arguments as enqueue_task_scx passed them)"),
        "{t}"
    );
    assert!(
        t.contains("dsq_id         -                        →  SCX_DSQ_LOCAL"),
        "{t}"
    );
    assert!(t.contains("no_task_here: 1 call in the records"), "{t}");
    assert!(t.contains("(no return recorded)"), "{t}");
    assert!(t.contains("only the call is recorded"), "{t}");
    assert!(
        t.contains("no file:line for kernel functions: not in the index"),
        "{t}"
    );
}
