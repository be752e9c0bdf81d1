//! The crafted kernel's BTF and a BPF program's BTF. Member names are the real kernel's; the
//! offsets are deliberately not, so a reader that hard-codes a 7.3 offset fails here.

use ktstr_btf::{BtfBuilder, TypeId};

/// `enum bpf_map_type` values used by the crafted maps (`include/uapi/linux/bpf.h`).
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// The crafted kernel's BTF.
pub fn kernel_btf() -> Vec<u8> {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let uint = b.int("unsigned int", 4, false);
    let ull = b.int("long long unsigned int", 8, false);
    let ulong = b.int("long unsigned int", 8, false);
    let ch = b.int_encoded("char", 1, 0, 0, 8);
    let uch = b.int("unsigned char", 1, false);
    let u32t = b.typedef("u32", uint);
    let u64t = b.typedef("u64", ull);
    let pid_t = b.typedef("pid_t", int);
    let void_ptr = b.ptr(TypeId::VOID);
    let comm = b.array(ch, int, 16);
    let name128 = b.array(ch, int, 128);
    let name16 = b.array(ch, int, 16);
    let name56 = b.array(ch, int, 56);

    let lh = b.next_id();
    let lh_ptr = b.ptr(TypeId(lh.0 + 1));
    let list_head = b.struct_type(
        "list_head",
        16,
        &[("next", lh_ptr, 0, 0), ("prev", lh_ptr, 64, 0)],
    );
    debug_assert_eq!(list_head.0, lh.0 + 1);
    let lnode = b.struct_type(
        "scx_dsq_list_node",
        24,
        &[
            ("node", list_head, 0, 0),
            ("flags", uint, 128, 0),
            ("priv", uint, 160, 0),
        ],
    );
    let see = b.struct_type("sched_ext_entity", 24, &[("dsq_list", lnode, 0, 0)]);
    let task = b.struct_type(
        "task_struct",
        64,
        &[
            ("flags", uint, 0, 0),
            ("pid", pid_t, 64, 0),
            ("comm", comm, 128, 0),
            ("scx", see, 256, 0),
        ],
    );
    let task_ptr = b.ptr(task);
    let rhead = b.next_id();
    let rhead_ptr = b.ptr(TypeId(rhead.0 + 1));
    let rhead_real = b.struct_type("rhash_head", 8, &[("next", rhead_ptr, 0, 0)]);
    debug_assert_eq!(rhead_real.0, rhead.0 + 1);
    let dsq = b.struct_type(
        "scx_dispatch_q",
        64,
        &[
            ("nr", u32t, 0, 0),
            ("first_task", task_ptr, 64, 0),
            ("id", u64t, 128, 0),
            ("hash_node", rhead_real, 192, 0),
            ("list", list_head, 256, 0),
        ],
    );
    let scx_rq = b.struct_type(
        "scx_rq",
        128,
        &[
            ("local_dsq", dsq, 0, 0),
            ("nr_running", u32t, 512, 0),
            ("flags", u32t, 544, 0),
            ("clock", u64t, 576, 0),
        ],
    );
    let rq = b.struct_type(
        "rq",
        256,
        &[
            ("nr_running", uint, 32, 0),
            ("clock", u64t, 128, 0),
            ("scx", scx_rq, 256, 0),
            ("curr", task_ptr, 1280, 0),
            ("cpu", int, 1344, 0),
        ],
    );
    let lock_head = b.struct_type("rhash_lock_head", 0, &[]);
    let lock_head_ptr = b.ptr(lock_head);
    let buckets = b.array(lock_head_ptr, int, 0);
    let bt = b.next_id();
    let bt_ptr = b.ptr(TypeId(bt.0 + 1));
    let bucket_table = b.struct_type(
        "bucket_table",
        64,
        &[
            ("size", uint, 0, 0),
            ("nest", uint, 32, 0),
            ("hash_rnd", u32t, 64, 0),
            ("future_tbl", bt_ptr, 384, 0),
            ("buckets", buckets, 512, 0),
        ],
    );
    debug_assert_eq!(bucket_table.0, bt.0 + 1);
    let atomic = b.struct_type("atomic_t", 4, &[("counter", int, 0, 0)]);
    let rht = b.struct_type(
        "rhashtable",
        160,
        &[
            ("tbl", bt_ptr, 0, 0),
            ("key_len", uint, 64, 0),
            ("nelems", atomic, 1248, 0),
        ],
    );
    let ops = b.struct_type("sched_ext_ops", 256, &[("name", name128, 1024, 0)]);
    b.struct_type(
        "scx_sched",
        512,
        &[("ops", ops, 0, 0), ("dsq_hash", rht, 2048, 0)],
    );

    let lock = b.struct_type("spinlock", 4, &[("val", uint, 0, 0)]);
    let spinlock_t = b.typedef("spinlock_t", lock);
    let xarray = b.struct_type(
        "xarray",
        16,
        &[
            ("xa_lock", spinlock_t, 0, 0),
            ("xa_flags", uint, 32, 0),
            ("xa_head", void_ptr, 64, 0),
        ],
    );
    b.struct_type(
        "idr",
        24,
        &[
            ("idr_rt", xarray, 0, 0),
            ("idr_base", uint, 128, 0),
            ("idr_next", uint, 160, 0),
        ],
    );
    let slots = b.array(void_ptr, int, 64);
    let marks = b.array(ulong, int, 3);
    let xarray_ptr = b.ptr(xarray);
    let node = b.next_id();
    let node_ptr = b.ptr(TypeId(node.0 + 1));
    b.struct_type(
        "xa_node",
        576,
        &[
            ("shift", uch, 0, 0),
            ("offset", uch, 8, 0),
            ("count", uch, 16, 0),
            ("nr_values", uch, 24, 0),
            ("parent", node_ptr, 64, 0),
            ("array", xarray_ptr, 128, 0),
            ("slots", slots, 320, 0),
            ("marks", marks, 4416, 0),
        ],
    );

    let kbtf = b.struct_type(
        "btf",
        256,
        &[
            ("data", void_ptr, 0, 0),
            ("nr_types", u32t, 640, 0),
            ("data_size", u32t, 736, 0),
            ("id", u32t, 800, 0),
            ("name", name56, 1408, 0),
        ],
    );
    let kbtf_ptr = b.ptr(kbtf);
    let map_type = b.enum_type(
        "bpf_map_type",
        4,
        false,
        &[
            ("BPF_MAP_TYPE_UNSPEC", 0),
            ("BPF_MAP_TYPE_HASH", BPF_MAP_TYPE_HASH as i32),
            ("BPF_MAP_TYPE_ARRAY", BPF_MAP_TYPE_ARRAY as i32),
            (
                "BPF_MAP_TYPE_PERCPU_ARRAY",
                BPF_MAP_TYPE_PERCPU_ARRAY as i32,
            ),
        ],
    );
    let map = b.struct_type(
        "bpf_map",
        128,
        &[
            ("map_type", map_type, 0, 0),
            ("key_size", u32t, 32, 0),
            ("value_size", u32t, 64, 0),
            ("max_entries", u32t, 96, 0),
            ("map_flags", u32t, 128, 0),
            ("id", u32t, 160, 0),
            ("btf_key_type_id", u32t, 192, 0),
            ("btf_value_type_id", u32t, 224, 0),
            ("btf", kbtf_ptr, 256, 0),
            ("name", name16, 384, 0),
        ],
    );
    // bpf_array's values follow it in an anonymous union of flexible arrays, as in the kernel.
    let empty = b.struct_type("", 0, &[]);
    let value = b.array(ch, int, 0);
    let pptrs = b.array(void_ptr, int, 0);
    let s_value = b.struct_type(
        "",
        0,
        &[("__empty_value", empty, 0, 0), ("value", value, 0, 0)],
    );
    let s_pptrs = b.struct_type(
        "",
        0,
        &[("__empty_pptrs", empty, 0, 0), ("pptrs", pptrs, 0, 0)],
    );
    let values = b.union_type("", 0, &[("", s_value, 0, 0), ("", s_pptrs, 0, 0)]);
    b.struct_type(
        "bpf_array",
        144,
        &[
            ("map", map, 0, 0),
            ("elem_size", u32t, 1024, 0),
            ("index_mask", u32t, 1056, 0),
            ("", values, 1152, 0),
        ],
    );
    let nn = b.next_id();
    let nn_ptr = b.ptr(TypeId(nn.0 + 2));
    let nn_pptr = b.ptr(nn_ptr);
    let nulls_node = b.struct_type(
        "hlist_nulls_node",
        16,
        &[("next", nn_ptr, 0, 0), ("pprev", nn_pptr, 64, 0)],
    );
    debug_assert_eq!(nulls_node.0, nn.0 + 2);
    let nulls_head = b.struct_type("hlist_nulls_head", 8, &[("first", nn_ptr, 0, 0)]);
    let bucket = b.struct_type(
        "bucket",
        16,
        &[("head", nulls_head, 0, 0), ("raw_lock", int, 64, 0)],
    );
    let bucket_ptr = b.ptr(bucket);
    b.struct_type(
        "bpf_htab",
        320,
        &[
            ("map", map, 0, 0),
            ("buckets", bucket_ptr, 1536, 0),
            ("n_buckets", u32t, 2048, 0),
            ("elem_size", u32t, 2080, 0),
        ],
    );
    let key = b.array(ch, int, 0);
    let hn = b.union_type("", 16, &[("hash_node", nulls_node, 0, 0)]);
    b.struct_type(
        "htab_elem",
        48,
        &[("", hn, 0, 0), ("hash", u32t, 320, 0), ("key", key, 384, 0)],
    );

    let runqueues = b.var("runqueues", rq, 1);
    b.datasec(".data..percpu", 0x2000, &[(runqueues, 0x1000, 256)]);
    b.finish()
}

/// A scheduler's BTF, as libbpf loads it: `.bss` and `.data` sections and the hash map's
/// value type.
pub fn program_btf() -> Vec<u8> {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, true);
    let ull = b.int("unsigned long long", 8, false);
    let ch = b.int_encoded("char", 1, 0, 0, 8);
    let u64t = b.typedef("u64", ull);
    let name = b.array(ch, int, 16);
    let v1 = b.var("nr_enqueued", u64t, 1);
    let v2 = b.var("nr_dispatched", u64t, 1);
    let v3 = b.var("sched_name", name, 1);
    b.datasec(".bss", 32, &[(v1, 0, 8), (v2, 8, 8), (v3, 16, 16)]);
    let v4 = b.var("slice_ns", u64t, 1);
    b.datasec(".data", 8, &[(v4, 0, 8)]);
    b.struct_type(
        "task_ctx",
        16,
        &[("pid", int, 0, 0), ("weight", u64t, 64, 0)],
    );
    b.finish()
}
