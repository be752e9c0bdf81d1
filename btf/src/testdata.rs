//! Small synthetic BTF shaped like the kernel's scheduler types, for doc examples and tests.
//! Not part of the stable API: compiled only with the `testkit` feature (and for unit tests).

use alloc::vec::Vec;

use crate::builder::BtfBuilder;
use crate::types::{Kind, TypeId};

/// Base BTF with `rq`, `scx_rq`, `scx_dispatch_q`, `task_struct`, `sched_ext_entity`, enums
/// `scx_dsq_id_flags` (ENUM64), `scx_exit_kind` and `scx_enq_flags` (single bits), the function
/// `scx_bpf_dsq_insert`, a `.bss` DATASEC, `struct cpumask` and `_Bool`, using every kind.
pub fn tiny() -> Vec<u8> {
    tiny_builder().finish()
}

fn tiny_builder() -> BtfBuilder {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true); // 1
    let uint = b.int("unsigned int", 4, false); // 2
    let ull = b.int("long long unsigned int", 8, false); // 3
    let long = b.int("long int", 8, true); // 4
    let ch = b.int_encoded("char", 1, 2, 0, 8); // 5
    let u32t = b.typedef("u32", uint); // 6
    let u64t = b.typedef("u64", ull); // 7
    let list_head = b.next_id(); // 8
    let lh_ptr = TypeId(list_head.0 + 1);
    b.struct_type(
        "list_head",
        16,
        &[("next", lh_ptr, 0, 0), ("prev", lh_ptr, 64, 0)],
    );
    b.ptr(list_head); // 9
    let dsq = b.struct_type(
        "scx_dispatch_q",
        24,
        &[
            ("list", list_head, 0, 0),
            ("nr", u32t, 128, 0),
            ("seq", u32t, 160, 0),
        ],
    );
    let scx_rq = b.struct_type(
        "scx_rq",
        32,
        &[("local_dsq", dsq, 0, 0), ("flags", u64t, 192, 0)],
    );
    let clock_union = b.union_type("", 8, &[("clock", u64t, 0, 0), ("clock_alt", u64t, 0, 0)]);
    let task_fwd_ptr_target = b.next_id();
    let task = TypeId(task_fwd_ptr_target.0 + 7);
    let rcu_task = b.reference(Kind::TypeTag, "rcu", task);
    let curr_ptr = b.ptr(rcu_task);
    let rq = b.struct_type(
        "rq",
        64,
        &[
            ("nr_running", uint, 0, 0),
            ("scx", scx_rq, 64, 0),
            ("", clock_union, 320, 0),
            ("curr", curr_ptr, 384, 0),
            ("cpu_capacity", long, 448, 0),
        ],
    );
    let dsq_ptr = b.ptr(dsq);
    let see = b.struct_type(
        "sched_ext_entity",
        16,
        &[("dsq", dsq_ptr, 0, 0), ("dsq_vtime", u64t, 64, 0)],
    );
    let vol_long = b.reference(Kind::Volatile, "", long);
    let comm = b.array(ch, int, 16);
    let task_id = b.struct_type(
        "task_struct",
        48,
        &[
            ("__state", vol_long, 0, 0),
            ("flags_bits", uint, 69, 3),
            ("prio", int, 96, 0),
            ("comm", comm, 128, 0),
            ("scx", see, 256, 0),
        ],
    );
    debug_assert_eq!(task_id, task);
    b.enum64_type(
        "scx_dsq_id_flags",
        8,
        false,
        &[
            ("SCX_DSQ_FLAG_BUILTIN", 1 << 63),
            ("SCX_DSQ_GLOBAL", (1 << 63) | 1),
        ],
    );
    b.enum_type(
        "scx_exit_kind",
        4,
        false,
        &[
            ("SCX_EXIT_NONE", 0),
            ("SCX_EXIT_ERROR", 1024),
            ("SCX_EXIT_ERROR_BPF", 1025),
            ("SCX_EXIT_ERROR_STALL", 1026),
        ],
    );
    let task_ptr = b.ptr(task);
    let proto = b.func_proto(
        TypeId::VOID,
        &[
            ("p", task_ptr),
            ("dsq_id", u64t),
            ("slice", u64t),
            ("enq_flags", u64t),
        ],
    );
    let f = b.func("scx_bpf_dsq_insert", proto, 1);
    b.decl_tag("kfunc", f, -1);
    let v1 = b.var("nr_enqueued", u64t, 1);
    let v2 = b.var("nr_dispatched", u64t, 1);
    b.datasec(".bss", 16, &[(v1, 0, 8), (v2, 8, 8)]);
    b.fwd("cgroup", false);
    b.float("double", 8);
    let cc = b.reference(Kind::Const, "", ch);
    let ccp = b.ptr(cc);
    b.reference(Kind::Restrict, "", ccp);
    // Appended later (ids above stay put): a flags enum, a cpumask, a bool.
    b.enum64_type(
        "scx_enq_flags",
        8,
        false,
        &[
            ("SCX_ENQ_WAKEUP", 1),
            ("SCX_ENQ_HEAD", 1 << 4),
            ("SCX_ENQ_PREEMPT", 1 << 32),
        ],
    );
    let ulong = b.int("long unsigned int", 8, false);
    let bits = b.array(ulong, int, 2);
    let cpumask = b.struct_type("cpumask", 16, &[("bits", bits, 0, 0)]);
    b.typedef("cpumask_t", cpumask);
    b.int_encoded("_Bool", 1, 4, 0, 8);
    let _ = rq;
    b
}

/// A base BTF ([`tiny`]) and a split BTF on top of it defining `struct mod_state`.
pub fn tiny_split() -> (Vec<u8>, Vec<u8>) {
    let base_bytes = tiny();
    let split = match crate::Btf::parse(&base_bytes) {
        Ok(base) => {
            let mut b = BtfBuilder::new_split(&base);
            let rq = base.find("rq").unwrap_or(TypeId::VOID);
            let u64t = base.find("u64").unwrap_or(TypeId::VOID);
            let rq_ptr = b.ptr(rq);
            b.struct_type(
                "mod_state",
                16,
                &[("rq", rq_ptr, 0, 0), ("count", u64t, 64, 0)],
            );
            b.finish()
        }
        Err(_) => Vec::new(),
    };
    (base_bytes, split)
}
