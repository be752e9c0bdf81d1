//! Naming the likely cause of a scheduler that would not load, from its own
//! output (libbpf's messages and the verifier log it prints).

/// Lines of the verifier log quoted with a rejection.
const VERIFIER_LINES: usize = 8;

/// The likely cause of a load failure, when the scheduler's output shows one.
pub fn likely_cause(log: &str) -> Option<String> {
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
        let start = lines[..end]
            .iter()
            .rposition(|l| l.contains("-- BEGIN PROG LOAD LOG --"))
            .map_or(0, |b| b + 1);
        let from = end.saturating_sub(VERIFIER_LINES).max(start);
        return Some(format!(
            "the BPF verifier rejected a program; the end of its log:\n    {}",
            lines[from..end].join("\n    ")
        ));
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
    }

    #[test]
    fn nothing_recognizable_is_none() {
        assert_eq!(likely_cause("scheduler says hello\n"), None);
    }
}
