//! A QEMU TCG plugin that stops the emulation at instruction counts a host
//! process asks for, so that the host can read guest memory at exact,
//! repeatable points of a deterministic run (ktstr's replay questions:
//! `cargo ktstr replay RUN/TEST --at 4.25s --show rq,dsq,bpf`).
//!
//! Why a plugin: under `-icount` QEMU runs every vCPU on one thread, and a
//! recorded guest is a function of its inputs as long as nothing cuts that
//! thread's time slices (a QMP `stop` kicks the vCPUs, which moves every
//! later vCPU switch). A plugin callback runs *in* that thread at the entry
//! of each translated block: blocking there freezes the whole machine at a
//! point fixed by the instruction count, without a kick, and letting it go
//! resumes exactly where it was.
//!
//! It also marks instructions: with `mark=ADDR` (a guest virtual address,
//! hex; repeatable) it tells the host the count at which the instruction at
//! `ADDR` first ran, an exact figure of the run that a recording keeps and
//! its replay must repeat (the entry of the kernel's scheduler-exit
//! function, for one).
//!
//! Loaded as `-plugin file=libktstr_qemu_gate.so,sock=PATH[,first=N][,mark=ADDR…]`:
//! at load it connects to the Unix stream socket `PATH`, where the host
//! listens. The protocol is one ASCII line per message:
//!
//! | from | line | meaning |
//! |---|---|---|
//! | plugin | `hello 1` | connected, protocol 1 |
//! | plugin | `stop C` | the machine is stopped: `C` guest instructions ran (all vCPUs, whole blocks) |
//! | host | `run N` | go on; stop again at the first block entry with count >= `N` |
//! | host | `free` | go on, never stop again |
//! | plugin | `mark I C` | the instruction of the `I`th `mark=` (from 0) ran for the first time after `C` instructions; no answer |
//! | plugin | `end C` | QEMU is exiting after `C` instructions |
//!
//! The first stop comes at count >= `first`; without `first` the plugin
//! never stops (it only marks). If the host goes away, the plugin frees
//! the machine.
//!
//! Counts are whole translated blocks entered, as QEMU's instruction-count
//! clock runs them; the same run gives the same counts, which is all the
//! host relies on. A mark's count is exact to the instruction: the
//! instructions before it in its block are added to the block's entry count.
//! Only the API of QEMU 10 and later is used (plugin API
//! version 4: `qemu_plugin_register_vcpu_tb_trans_cb`,
//! `qemu_plugin_register_vcpu_tb_exec_cb`, `qemu_plugin_tb_n_insns`,
//! `qemu_plugin_tb_get_insn`, `qemu_plugin_insn_vaddr`,
//! `qemu_plugin_register_vcpu_insn_exec_cb`,
//! `qemu_plugin_register_atexit_cb`), looked up in QEMU at load time so that
//! building needs no QEMU headers or libraries.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// QEMU's plugin handle (`qemu_plugin_id_t`).
type PluginId = u64;

/// `struct qemu_plugin_tb`, opaque.
#[repr(C)]
struct Tb {
    _opaque: [u8; 0],
}

/// `struct qemu_plugin_insn`, opaque.
#[repr(C)]
struct Insn {
    _opaque: [u8; 0],
}

/// `enum qemu_plugin_cb_flags`: `QEMU_PLUGIN_CB_NO_REGS`.
const CB_NO_REGS: c_int = 0;

type TbTransCb = extern "C" fn(PluginId, *mut Tb);
type VcpuUdataCb = extern "C" fn(u32, *mut c_void);
type UdataCb = extern "C" fn(PluginId, *mut c_void);

/// QEMU's plugin API functions this plugin calls, with the signatures of
/// `include/qemu/qemu-plugin.h` (API version 4). Looked up in the running
/// QEMU when it loads the plugin (`dlsym`), rather than linked, so the
/// library (and its tests) build without QEMU.
struct Api {
    register_tb_trans: RegisterTbTrans,
    register_tb_exec: RegisterTbExec,
    tb_n_insns: TbNInsns,
    tb_get_insn: TbGetInsn,
    insn_vaddr: InsnVaddr,
    register_insn_exec: RegisterInsnExec,
    register_atexit: RegisterAtexit,
}

type RegisterTbTrans = unsafe extern "C" fn(PluginId, TbTransCb);
type RegisterTbExec = unsafe extern "C" fn(*mut Tb, VcpuUdataCb, c_int, *mut c_void);
type TbNInsns = unsafe extern "C" fn(*const Tb) -> usize;
type TbGetInsn = unsafe extern "C" fn(*const Tb, usize) -> *mut Insn;
type InsnVaddr = unsafe extern "C" fn(*const Insn) -> u64;
type RegisterInsnExec = unsafe extern "C" fn(*mut Insn, VcpuUdataCb, c_int, *mut c_void);
type RegisterAtexit = unsafe extern "C" fn(PluginId, UdataCb, *mut c_void);

static API: OnceLock<Api> = OnceLock::new();

/// QEMU's symbol `name`, from the process the plugin was loaded into.
fn symbol(name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the loaded
    // objects, which includes the QEMU executable's exported plugin API.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        Err(format!(
            "QEMU has no {} (a QEMU built without plugins, or older than 10?)",
            name.to_string_lossy()
        ))
    } else {
        Ok(p)
    }
}

impl Api {
    fn load() -> Result<Api, String> {
        let trans = symbol(c"qemu_plugin_register_vcpu_tb_trans_cb")?;
        let exec = symbol(c"qemu_plugin_register_vcpu_tb_exec_cb")?;
        let n = symbol(c"qemu_plugin_tb_n_insns")?;
        let get_insn = symbol(c"qemu_plugin_tb_get_insn")?;
        let vaddr = symbol(c"qemu_plugin_insn_vaddr")?;
        let insn_exec = symbol(c"qemu_plugin_register_vcpu_insn_exec_cb")?;
        let atexit = symbol(c"qemu_plugin_register_atexit_cb")?;
        // SAFETY: each pointer is the QEMU function of that name, whose C
        // signature is the one the field declares (plugin API version 4).
        unsafe {
            Ok(Api {
                register_tb_trans: std::mem::transmute::<*mut c_void, RegisterTbTrans>(trans),
                register_tb_exec: std::mem::transmute::<*mut c_void, RegisterTbExec>(exec),
                tb_n_insns: std::mem::transmute::<*mut c_void, TbNInsns>(n),
                tb_get_insn: std::mem::transmute::<*mut c_void, TbGetInsn>(get_insn),
                insn_vaddr: std::mem::transmute::<*mut c_void, InsnVaddr>(vaddr),
                register_insn_exec: std::mem::transmute::<*mut c_void, RegisterInsnExec>(insn_exec),
                register_atexit: std::mem::transmute::<*mut c_void, RegisterAtexit>(atexit),
            })
        }
    }
}

/// The plugin API version this library is written against (QEMU checks it
/// lies between its minimum and current versions).
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 4;

/// Instructions entered so far, all vCPUs.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// The count at which to stop next (`u64::MAX`: never).
static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The host's connection: a writer and a line reader over one socket.
struct Gate {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

static GATE: Mutex<Option<Gate>> = Mutex::new(None);

/// The addresses `mark=` names, in argument order.
static MARKS: OnceLock<Vec<u64>> = OnceLock::new();
/// Which marks were reported (bit `I`: mark `I`); at most [`MAX_MARKS`].
static MARKED: AtomicU64 = AtomicU64::new(0);
/// How many `mark=` arguments the plugin takes.
const MAX_MARKS: usize = 16;

fn gate() -> std::sync::MutexGuard<'static, Option<Gate>> {
    GATE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends `line`, reads the host's answer; `None` when the host is gone.
fn ask(g: &mut Gate, line: &str) -> Option<String> {
    g.out.write_all(line.as_bytes()).ok()?;
    let mut answer = String::new();
    match g.input.read_line(&mut answer) {
        Ok(n) if n > 0 => Some(answer),
        _ => None,
    }
}

/// The machine is stopped at `count`: ask the host when to stop next.
fn stop(count: u64) {
    let mut guard = gate();
    let next = guard
        .as_mut()
        .and_then(|g| ask(g, &format!("stop {count}\n")))
        .and_then(|a| {
            let a = a.trim();
            if a == "free" {
                return Some(u64::MAX);
            }
            a.strip_prefix("run ")?.parse::<u64>().ok()
        });
    match next {
        // An answer at or below the count stops at the very next block.
        Some(n) => NEXT.store(n, Ordering::Relaxed),
        // No host or a garbled answer: run free, never block the guest.
        None => {
            NEXT.store(u64::MAX, Ordering::Relaxed);
            *guard = None;
        }
    }
}

/// At each translated block's entry, in the vCPU thread.
extern "C" fn block_entered(_vcpu: u32, insns: *mut c_void) {
    let before = COUNT.load(Ordering::Relaxed);
    if before >= NEXT.load(Ordering::Relaxed) {
        stop(before);
    }
    COUNT.store(before.wrapping_add(insns as u64), Ordering::Relaxed);
}

/// Reports mark `index` at `count`, the first time only.
fn mark(index: usize, count: u64) {
    let bit = 1u64 << index;
    if MARKED.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    if let Some(g) = gate().as_mut() {
        // No answer is awaited: a host that is gone is found at the next stop.
        let _ = g
            .out
            .write_all(format!("mark {index} {count}\n").as_bytes());
    }
}

/// Packs what a marked instruction's callback needs into its user data:
/// the mark's index and how many instructions of its block come at and
/// after it (the block's entry count includes them).
fn mark_data(index: usize, from_end: usize) -> *mut c_void {
    ((index << 32) | (from_end & 0xffff_ffff)) as *mut c_void
}

/// At a marked instruction, in the vCPU thread, after its block's entry
/// was counted ([`block_entered`] runs first: it is the block's own
/// callback, and the instruction is not the block's first).
extern "C" fn insn_marked(_vcpu: u32, data: *mut c_void) {
    let d = data as usize;
    let count = COUNT.load(Ordering::Relaxed) - (d & 0xffff_ffff) as u64;
    mark(d >> 32, count);
}

/// The entry of a block whose first instruction is marked.
extern "C" fn block_marked(vcpu: u32, data: *mut c_void) {
    let d = data as usize;
    let before = COUNT.load(Ordering::Relaxed);
    block_entered(vcpu, (d & 0xffff_ffff) as *mut c_void);
    // Stopped or not, the instruction runs after `before` instructions.
    mark(d >> 32, before);
}

/// At each block's translation: count it at each entry; report the
/// instructions `mark=` names.
extern "C" fn block_translated(_id: PluginId, tb: *mut Tb) {
    let Some(api) = API.get() else { return };
    // SAFETY: `tb` is the block QEMU is translating, valid during this call.
    let n = unsafe { (api.tb_n_insns)(tb) };
    let marks = MARKS.get().map_or(&[][..], Vec::as_slice);
    let mut first_marked = None;
    for i in 0..if marks.is_empty() { 0 } else { n } {
        // SAFETY: `i` < the block's instruction count; the instruction
        // handle is valid during this translation.
        let insn = unsafe { (api.tb_get_insn)(tb, i) };
        // SAFETY: as above.
        let vaddr = unsafe { (api.insn_vaddr)(insn) };
        let Some(index) = marks.iter().position(|&m| m == vaddr) else {
            continue;
        };
        if i == 0 {
            first_marked = Some(index);
        } else {
            // SAFETY: as above; the callback is this library's, the user
            // data a packed integer.
            unsafe {
                (api.register_insn_exec)(insn, insn_marked, CB_NO_REGS, mark_data(index, n - i))
            };
        }
    }
    // SAFETY: as above; the callback and its user data (the block's
    // instruction count, and a mark, as a pointer-sized integer) outlive
    // the block.
    unsafe {
        match first_marked {
            Some(index) => {
                (api.register_tb_exec)(tb, block_marked, CB_NO_REGS, mark_data(index, n))
            }
            None => (api.register_tb_exec)(tb, block_entered, CB_NO_REGS, n as *mut c_void),
        }
    }
}

extern "C" fn exiting(_id: PluginId, _data: *mut c_void) {
    let mut guard = gate();
    if let Some(g) = guard.as_mut() {
        let count = COUNT.load(Ordering::Relaxed);
        let _ = g.out.write_all(format!("end {count}\n").as_bytes());
    }
    *guard = None;
}

/// What QEMU's `key=value` arguments ask of the plugin.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    /// `sock=PATH`.
    sock: String,
    /// `first=N`; `None`: never stop.
    first: Option<u64>,
    /// `mark=ADDR`, hex, in order.
    marks: Vec<u64>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut sock, mut first, mut marks) = (None, None, Vec::new());
    for a in args {
        match a.split_once('=') {
            Some(("sock", v)) => sock = Some(v.to_string()),
            Some(("first", v)) => {
                first = Some(
                    v.parse()
                        .map_err(|_| format!("first={v}: not an instruction count"))?,
                )
            }
            Some(("mark", v)) => {
                if marks.len() == MAX_MARKS {
                    return Err(format!("more than {MAX_MARKS} mark= arguments"));
                }
                let hex = v.strip_prefix("0x").unwrap_or(v);
                marks.push(
                    u64::from_str_radix(hex, 16)
                        .map_err(|_| format!("mark={v}: not a hex address"))?,
                );
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?} (sock=PATH, first=N, mark=ADDR)"
                ));
            }
        }
    }
    Ok(Args {
        sock: sock.ok_or("no sock=PATH argument")?,
        first,
        marks,
    })
}

/// QEMU's entry point: connect to the host, register the callbacks.
///
/// # Safety
///
/// Called by QEMU with `argc` valid NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let args: Vec<String> = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: QEMU passes `argc` valid C strings in `argv`.
            unsafe { CStr::from_ptr(*argv.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let api = match Api::load() {
        Ok(a) => API.get_or_init(|| a),
        Err(e) => {
            eprintln!("ktstr-qemu-gate: {e}");
            return -1;
        }
    };
    let Args { sock, first, marks } = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ktstr-qemu-gate: {e}");
            return -1;
        }
    };
    let stream = match UnixStream::connect(&sock) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ktstr-qemu-gate: connecting to {sock}: {e}");
            return -1;
        }
    };
    let input = match stream.try_clone() {
        Ok(s) => BufReader::new(s),
        Err(e) => {
            eprintln!("ktstr-qemu-gate: {e}");
            return -1;
        }
    };
    let mut g = Gate { out: stream, input };
    if g.out.write_all(b"hello 1\n").is_err() {
        eprintln!("ktstr-qemu-gate: the host at {sock} closed the connection");
        return -1;
    }
    *gate() = Some(g);
    NEXT.store(first.unwrap_or(u64::MAX), Ordering::Relaxed);
    let _ = MARKS.set(marks);
    // SAFETY: `id` is this plugin's handle; the callbacks are `extern "C"`
    // functions of this library, which QEMU keeps loaded until it exits.
    unsafe {
        (api.register_tb_trans)(id, block_translated);
        (api.register_atexit)(id, exiting, std::ptr::null_mut());
    }
    0
}

#[cfg(test)]
mod tests {
    use super::{Args, mark_data, parse};

    #[test]
    fn arguments_name_the_socket_the_first_stop_and_the_marks() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let args = |first, marks: &[u64]| Args {
            sock: "/tmp/g".into(),
            first,
            marks: marks.to_vec(),
        };
        assert_eq!(a(&["sock=/tmp/g", "first=5"]), Ok(args(Some(5), &[])));
        assert_eq!(a(&["sock=/tmp/g"]), Ok(args(None, &[])));
        assert_eq!(
            a(&["sock=/tmp/g", "mark=0xffffffff8120afb0", "mark=10"]),
            Ok(args(None, &[0xffff_ffff_8120_afb0, 0x10]))
        );
        assert!(
            a(&["sock=/g", "mark=zz"])
                .expect_err("refused")
                .contains("mark=zz")
        );
        let many: Vec<String> = std::iter::once("sock=/g".to_string())
            .chain((0..17).map(|i| format!("mark={i:x}")))
            .collect();
        assert!(parse(&many).expect_err("refused").contains("more than 16"));
        assert!(a(&["first=5"]).expect_err("refused").contains("sock=PATH"));
        assert!(
            a(&["sock=/g", "first=x"])
                .expect_err("refused")
                .contains("first=x")
        );
        assert!(
            a(&["sock=/g", "size=1"])
                .expect_err("refused")
                .contains("size=1")
        );
    }

    #[test]
    fn a_marks_user_data_holds_its_index_and_its_place_from_the_blocks_end() {
        let d = mark_data(15, 3) as usize;
        assert_eq!((d >> 32, d & 0xffff_ffff), (15, 3));
    }
}
