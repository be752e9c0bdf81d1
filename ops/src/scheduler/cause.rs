//! Naming the likely cause of a scheduler that would not load, from its own
//! output (libbpf's messages and the verifier log it prints).

/// Lines of the verifier log quoted with a rejection.
const VERIFIER_LINES: usize = 8;

/// The likely cause of a load failure, when the scheduler's output shows one.
pub(crate) fn likely_cause(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let has = |needle: &str| lines.iter().position(|l| l.contains(needle));
    if has("failed to open system Kconfig").is_some() {
        return Some(
            "the scheduler reads the kernel config (__kconfig externs) and libbpf found none: \
             no /proc/config.gz and no /boot/config-$(uname -r) in the guest"
                .into(),
        );
    }
    // libbpf: "extern (func ksym) 'scx_bpf_foo': not found in kernel or module BTFs"
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("extern (func ksym)") && l.contains("not found"))
    {
        let name = lines[i].split('\'').nth(1).unwrap_or("?");
        return Some(format!(
            "the kernel lacks the kfunc {name} the scheduler calls (too old or too new a kernel \
             for this scheduler): {}",
            lines[i].trim()
        ));
    }
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("extern") && l.contains("not found") && l.contains("ksym"))
    {
        return Some(format!(
            "the kernel lacks a symbol the scheduler needs: {}",
            lines[i].trim()
        ));
    }
    // The verifier's log sits between these markers; its last lines say why.
    if let Some(end) = has("-- END PROG LOAD LOG --") {
        return Some(verifier_rejection(&lines, end));
    }
    if let Some(i) = has("failed to load object").or_else(|| has("failed to load BPF")) {
        return Some(format!(
            "libbpf could not load the object: {}",
            lines[i].trim()
        ));
    }
    if has("Operation not permitted").is_some() || has("EPERM").is_some() {
        return Some("the kernel refused a BPF operation (Operation not permitted)".into());
    }
    None
}

/// The rejected program (libbpf names it: `libbpf: prog 'NAME': ...` before the log), the
/// instructions the verifier processed before it stopped (its `processed N insns (limit M)`
/// line, which it writes at the end of every log), and the log's last lines.
fn verifier_rejection(lines: &[&str], end: usize) -> String {
    let begin = lines[..end]
        .iter()
        .rposition(|l| l.contains("-- BEGIN PROG LOAD LOG --"));
    let start = begin.map_or(0, |b| b + 1);
    let prog = lines[..begin.map_or(end, |b| b + 1)]
        .iter()
        .rev()
        .find_map(|l| l.split("prog '").nth(1)?.split('\'').next())
        .unwrap_or("(unnamed)");
    let log = &lines[start..end];
    let stats = log
        .iter()
        .rposition(|l| l.trim_start().starts_with("processed "));
    let processed = stats.map(|i| log[i].trim()).and_then(|l| {
        let n = l.split_whitespace().nth(1)?;
        let limit = l.split("(limit ").nth(1)?.split(')').next()?;
        Some(format!(
            " after processing {n} instructions (limit {limit})"
        ))
    });
    // What follows the last instruction it walked says why it stopped (the
    // classic one-line error, and on newer kernels a "Verification failed:"
    // explanation after it); without instructions, the lines before the
    // statistics.
    let body = &log[..stats.unwrap_or(log.len())];
    let why: Vec<&str> = match body.iter().rposition(|l| is_insn_line(l)) {
        Some(last) => body[last + 1..]
            .iter()
            .copied()
            .filter(|l| !l.trim().is_empty())
            .take(VERIFIER_LINES)
            .collect(),
        None => body[body.len().saturating_sub(VERIFIER_LINES)..].to_vec(),
    };
    format!(
        "the BPF verifier rejected program {prog}{}; it says:\n    {}",
        processed.unwrap_or_default(),
        why.join("\n    ")
    )
}

/// A line of the verifier's instruction trace: `34: (79) r1 = *(u64 *)(r1 +0)`.
fn is_insn_line(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && line.get(digits..).is_some_and(|r| r.starts_with(": ("))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_config_is_named() {
        let log = "libbpf: failed to open system Kconfig\nlibbpf: failed to load object 'x'\nError: Invalid argument";
        let c = likely_cause(log).expect("named");
        assert!(
            c.contains("kernel config") && c.contains("/boot/config"),
            "{c}"
        );
    }

    #[test]
    fn a_missing_kfunc_is_named() {
        let log = "libbpf: extern (func ksym) 'scx_bpf_dsq_move_set_slice': not found in kernel or module BTFs\n";
        let c = likely_cause(log).expect("named");
        assert!(c.contains("kfunc scx_bpf_dsq_move_set_slice"), "{c}");
    }

    #[test]
    fn a_verifier_rejection_quotes_the_end_of_its_log() {
        let mut log = String::from(
            "libbpf: prog 'enqueue': BPF program load failed: Permission denied\n-- BEGIN PROG LOAD LOG --\n",
        );
        for i in 0..20 {
            log.push_str(&format!("{i}: (b7) r0 = 0\n"));
        }
        log.push_str("R1 invalid mem access 'scalar'\n-- END PROG LOAD LOG --\n");
        let c = likely_cause(&log).expect("named");
        assert!(
            c.contains("verifier") && c.contains("invalid mem access"),
            "{c}"
        );
        assert!(!c.contains("0: (b7)"), "only the last lines: {c}");
        assert!(c.contains("rejected program enqueue;"), "{c}");
    }

    #[test]
    fn a_verifier_rejection_names_the_program_and_where_it_stopped() {
        let log = "libbpf: prog 'ktstr_dispatch': BPF program load failed: Argument list too long\n\
                   libbpf: prog 'ktstr_dispatch': -- BEGIN PROG LOAD LOG --\n\
                   1000: (07) r1 += 1\n\
                   BPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 4 total_states 9000 peak_states 900 mark_read 3\n\
                   -- END PROG LOAD LOG --\n\
                   libbpf: prog 'ktstr_dispatch': failed to load: -7\n";
        let c = likely_cause(log).expect("named");
        assert!(
            c.starts_with(
                "the BPF verifier rejected program ktstr_dispatch after processing 1000001 \
                 instructions (limit 1000000); it says:"
            ),
            "{c}"
        );
        assert!(c.contains("BPF program is too large"), "{c}");
        assert!(!c.contains("max_states_per_insn"), "{c}");
        assert!(!c.contains("r1 += 1"), "the trace is not the reason: {c}");
    }

    /// A 7.3 kernel explains a rejection below its one-line error (this log
    /// is scx-ktstr --planted-reject's on Debian's 7.3.4, cut).
    #[test]
    fn a_newer_kernel_s_explanation_is_quoted_not_its_trace() {
        let log = "libbpf: prog 'ktstr_enqueue': -- BEGIN PROG LOAD LOG --\n\
                   33: (61) r1 = *(u32 *)(r10 -4)        ; R1=scalar()\n\
                   34: (79) r1 = *(u64 *)(r1 +0)\n\
                   R1 invalid mem access 'scalar'\n\
                   \n\
                   Verification failed: Register Type Safety: Invalid dereference\n\
                   \n\
                   Reason:\n\
                   \x20 R1 is an integer scalar here, not a pointer to memory.\n\
                   \n\
                   At:\n\
                   Instruction context:\n\
                   \x20 >>> 34 | (79) r1 = *(u64 *)(r1 +0)\n\
                   Suggestion:\n\
                   processed 20 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0\n\
                   -- END PROG LOAD LOG --\n";
        let c = likely_cause(log).expect("named");
        assert!(
            c.contains("rejected program ktstr_enqueue after processing 20 instructions"),
            "{c}"
        );
        assert!(
            c.contains(
                "R1 invalid mem access 'scalar'\n    Verification failed: Register Type Safety"
            ),
            "{c}"
        );
        assert!(c.contains("not a pointer to memory"), "{c}");
    }

    #[test]
    fn nothing_recognizable_is_none() {
        assert_eq!(likely_cause("scheduler says hello\n"), None);
    }
}
