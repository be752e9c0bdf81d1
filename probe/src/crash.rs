//! What the first VM's failure says about the crash path: the kernel's
//! backtrace of the exit (printed after "sched_ext: BPF scheduler ... disabled")
//! and the task a stall names.

/// One frame of the exit backtrace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A kernel function and the offset in it.
    Kernel {
        /// Function name.
        func: String,
        /// Offset of the return address in it.
        offset: u64,
    },
    /// A BPF program (`bpf_prog_<tag>_<name>`): a scheduler callback.
    Bpf {
        /// The program's name (`ktstr_dispatch`).
        name: String,
        /// Offset in its JIT image.
        offset: u64,
    },
    /// The struct_ops trampoline of a callback (`bpf__sched_ext_ops_dispatch`).
    Ops {
        /// The `sched_ext_ops` member (`dispatch`).
        op: String,
    },
}

impl Frame {
    /// The frame in a console line (`   do_pick_task_scx+0x2d8/0xcb0`), if it is one.
    pub fn parse(line: &str) -> Option<Frame> {
        // Console lines may carry a timestamp: "[   18.89] <sym>+0x../0x..".
        let text = match line.trim_start().strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(_, t)| t),
            None => line,
        };
        let word = text.split_whitespace().next()?;
        let (sym, rest) = word.split_once("+0x")?;
        let (off, _) = rest.split_once('/')?;
        let offset = u64::from_str_radix(off, 16).ok()?;
        if sym.is_empty()
            || !sym
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return None;
        }
        if let Some(op) = sym.strip_prefix("bpf__sched_ext_ops_") {
            return Some(Frame::Ops { op: op.into() });
        }
        if let Some(rest) = sym.strip_prefix("bpf_prog_") {
            // bpf_prog_<16 hex digit tag>_<name>
            let (tag, name) = rest.split_once('_')?;
            if tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty() {
                return Some(Frame::Bpf {
                    name: name.into(),
                    offset,
                });
            }
        }
        Some(Frame::Kernel {
            func: sym.into(),
            offset,
        })
    }
}

/// The exit the first VM saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashInfo {
    /// The kernel's reason text (`scx_bpf_error`, `runnable task stall`).
    pub reason: String,
    /// The kernel's exit message.
    pub message: Option<String>,
    /// The backtrace of the exit, innermost first.
    pub frames: Vec<Frame>,
}

impl CrashInfo {
    /// The crash of the console `lines`: the backtrace that follows the last
    /// "sched_ext: BPF scheduler ... disabled (...)" line.
    pub fn from_console(reason: &str, message: Option<&str>, lines: &[String]) -> CrashInfo {
        let start = lines
            .iter()
            .rposition(|l| l.contains("sched_ext: BPF scheduler") && l.contains("disabled ("));
        let mut frames = Vec::new();
        if let Some(s) = start {
            // The message line, then the frames; stop at the first line that is neither.
            for l in lines.iter().skip(s + 1).take(64) {
                match Frame::parse(l) {
                    Some(f) => frames.push(f),
                    None if frames.is_empty() => continue,
                    None => break,
                }
            }
        }
        CrashInfo {
            reason: reason.into(),
            message: message.map(str::to_string),
            frames,
        }
    }

    /// The pid a stall message names (`kworker/u8:1[42] failed to run for 3.2s`).
    pub fn stalled_pid(&self) -> Option<i64> {
        let m = self.message.as_deref()?;
        let at = m.find("] failed to run")?;
        let open = m[..at].rfind('[')?;
        m[open + 1..at].parse().ok()
    }

    /// The scheduler callbacks in the backtrace, with their `sched_ext_ops` member.
    pub fn callbacks(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (i, f) in self.frames.iter().enumerate() {
            if let Frame::Bpf { name, .. } = f {
                let op = self.frames[i + 1..].iter().find_map(|f| match f {
                    Frame::Ops { op } => Some(op.clone()),
                    _ => None,
                });
                out.push((name.clone(), op));
            }
        }
        out
    }

    /// The kernel functions of the backtrace, innermost first.
    pub fn kernel_funcs(&self) -> Vec<(String, u64)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Kernel { func, offset } => Some((func.clone(), *offset)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(t: &str) -> Vec<String> {
        t.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_backtrace_after_the_exit_line_is_read() {
        let c = lines(
            "[   16.81] sched_ext: BPF scheduler \"ktstr\" enabled\n\
             [   18.89] sched_ext: BPF scheduler \"ktstr\" disabled (scx_bpf_error)\n\
             [   18.89] sched_ext: ktstr: scx-ktstr: crash requested (nr_dispatched=146)\n\
             [   18.89]    scx_exit_bstr+0xdd/0x110\n\
             [   18.89]    scx_bpf_error_bstr+0x60/0xa0\n\
             [   18.89]    bpf_prog_a4a126762922924a_ktstr_dispatch+0x6d/0x160\n\
             [   18.89]    bpf__sched_ext_ops_dispatch+0x50/0xb0\n\
             [   18.89]    do_pick_task_scx+0x2d8/0xcb0\n\
             [   18.89]    __schedule+0x6c3/0x1080\n\
             ktstr-init: scheduler died",
        );
        let info = CrashInfo::from_console("scx_bpf_error", Some("x"), &c);
        assert_eq!(info.frames.len(), 6, "{:?}", info.frames);
        assert_eq!(
            info.callbacks(),
            vec![("ktstr_dispatch".to_string(), Some("dispatch".to_string()))]
        );
        assert_eq!(
            info.kernel_funcs()[2],
            ("do_pick_task_scx".to_string(), 0x2d8)
        );
    }

    #[test]
    fn a_stall_names_its_task() {
        let info = CrashInfo {
            reason: "runnable task stall".into(),
            message: Some("kworker/u8:1[42] failed to run for 3.264s".into()),
            frames: vec![],
        };
        assert_eq!(info.stalled_pid(), Some(42));
        assert_eq!(CrashInfo::default().stalled_pid(), None);
    }

    #[test]
    fn garbage_lines_are_no_frames() {
        for l in ["", "+0x", "foo+0xzz/0x1", "a b c", "bpf_prog_xyz_+0x1/0x2 "] {
            let f = Frame::parse(l);
            assert!(!matches!(f, Some(Frame::Bpf { .. })), "{l:?} gave {f:?}");
        }
        assert_eq!(Frame::parse("foo+0xzz/0x1"), None);
    }
}
