use super::*;

/// A recording's directory with a manifest over real files (no VM).
fn fake(dir: &Path) -> Manifest {
    std::fs::create_dir_all(dir).expect("dir");
    let file = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).expect("write");
        let mut f = digest(&dir.join(name)).expect("digest");
        f.path = name.into();
        f
    };
    let console = file(CONSOLE, b"[    1.000000] hello\n[    2.500000] sched_ext: BPF scheduler \"x\" disabled (runtime error)\n");
    let messages = file(MESSAGES, b"\"BodyStarted\"\n");
    let initrd = file(INITRD, b"070701");
    let kernel = file("vmlinux", b"\x7fELF not really");
    let m = Manifest {
        schema: SCHEMA,
        test: "t::u".into(),
        run: "20261207-170000-1".into(),
        recorded_at: "2026-12-07T17:00:00".into(),
        qemu: kernel.clone(),
        qemu_id: "qemu-tcg nested-svm=false 10.0.2".into(),
        kernel,
        kernel_release: Some("7.3.4".into()),
        initrd,
        cmdline: "console=ttyS0".into(),
        topology: "1n1l2c1t".into(),
        memory_mib: 512,
        node_memory: vec![512 << 20],
        reserved: vec![(0x600_0000, 0x40_0000)],
        seed: 7,
        rtc_base: "2026-12-07T17:00:00".into(),
        console_lines: 2,
        console,
        messages,
        message_count: 1,
        end: "PowerOff".into(),
        scheduler_exit: None,
        marks: Vec::new(),
        marks_missing: Some("not counted".into()),
        wall_s: 1.0,
        size_bytes: 0,
    };
    std::fs::write(
        dir.join(MANIFEST),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("manifest");
    m
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ktstr-rec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_whole_recording_loads_and_its_files_check() {
    let d = scratch("whole");
    let m = fake(&d);
    let back = load(&d).expect("loads");
    assert_eq!(back.seed, 7);
    check_own(&d, &m.console).expect("console whole");
    check_own(&d, &m.initrd).expect("initrd whole");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_truncated_console_is_refused_naming_the_file() {
    let d = scratch("trunc");
    let m = fake(&d);
    let path = d.join(CONSOLE);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = check_own(&d, &m.console).expect_err("truncated");
    let text = e.to_string();
    assert!(
        text.contains("console.txt") && text.contains("truncated"),
        "{text}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_truncated_or_foreign_manifest_is_refused() {
    let d = scratch("manifest");
    fake(&d);
    let path = d.join(MANIFEST);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, &text[..text.len() / 3]).expect("cut");
    let e = load(&d).expect_err("cut manifest");
    assert!(e.to_string().contains("truncated"), "{e}");
    std::fs::write(&path, text.replace("\"schema\": 1", "\"schema\": 9")).expect("schema");
    let e = load(&d).expect_err("other schema");
    assert!(e.to_string().contains("schema is 9"), "{e}");
    let e = load(&d.join("nowhere")).expect_err("missing");
    assert!(e.to_string().contains("recording.json"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_recording_made_before_marks_loads_without_them() {
    let d = scratch("unmarked");
    fake(&d);
    let path = d.join(MANIFEST);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let o = v.as_object_mut().expect("object");
    o.remove("marks");
    o.remove("marks_missing");
    std::fs::write(&path, serde_json::to_vec(&v).expect("json")).expect("write");
    let m = load(&d).expect("an older recording loads");
    assert!(m.marks.is_empty() && m.marks_missing.is_none());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_count_divergence_names_the_function_and_both_counts() {
    let mark = |count| Mark {
        what: "scheduler exit requested".into(),
        symbol: "scx_claim_exit".into(),
        address: 0xffff_ffff_813e_b870,
        count,
    };
    let d = Divergence::Mark {
        recorded: mark(Some(1340082593)),
        replayed: mark(None),
    };
    let text = d.to_string();
    assert!(
        text.contains(
            "recorded: scheduler exit requested (scx_claim_exit) at instruction 1340082593"
        ) && text.contains("replayed: scheduler exit requested (scx_claim_exit) never ran"),
        "{text}"
    );
}

#[test]
fn the_exit_line_is_the_kernels_disable_line() {
    let lines = vec![
        "[    1.0] boot".to_string(),
        "[    2.5] sched_ext: BPF scheduler \"x\" disabled (runtime error)".to_string(),
    ];
    assert_eq!(scheduler_exit(&lines).as_deref(), Some(lines[1].as_str()));
    assert_eq!(scheduler_exit(&lines[..1]), None);
}

#[test]
fn a_console_lines_clock_is_its_kernel_timestamp() {
    assert_eq!(console_clock("[    6.619106] sched_ext: x"), Some(6.619106));
    assert_eq!(console_clock("  [12.5] y"), Some(12.5));
    assert_eq!(console_clock("scx-ktstr: attached"), None);
    assert_eq!(console_clock("[ x ] y"), None);
}

/// A backend whose program is a given file; it boots nothing.
struct Fake(Option<PathBuf>);

impl ktstr_vmm::Backend for Fake {
    fn name(&self) -> String {
        "fake".into()
    }
    fn boot(
        &self,
        _: &ktstr_vmm::VmSpec,
    ) -> Result<Box<dyn ktstr_vmm::Machine>, ktstr_vmm::VmmError> {
        Err(ktstr_vmm::VmmError::Unsupported("fake".into()))
    }
    fn program(&self) -> Option<PathBuf> {
        self.0.clone()
    }
}

#[test]
fn another_qemu_or_kernel_or_backend_is_refused() {
    let d = scratch("inputs");
    let mut m = fake(&d);
    // Absolute paths, as a real recording has them.
    m.kernel.path = d.join("vmlinux").to_string_lossy().into_owned();
    m.qemu.path = m.kernel.path.clone();
    let same = Fake(Some(d.join("vmlinux")));
    replay::check_inputs(&m, &same).expect("the recorded inputs");
    std::fs::write(d.join("other-qemu"), b"another build").expect("write");
    let e = replay::check_inputs(&m, &Fake(Some(d.join("other-qemu")))).expect_err("qemu");
    assert!(e.to_string().contains("QEMU binary"), "{e}");
    let e = replay::check_inputs(&m, &Fake(None)).expect_err("kvm");
    assert!(e.to_string().contains("KTSTR_BACKEND=qemu"), "{e}");
    let mut other = m.clone();
    other.qemu.sha256 = same_sha(&d.join("vmlinux"));
    other.kernel.sha256 = "00".repeat(32);
    let e = replay::check_inputs(&other, &same).expect_err("kernel");
    assert!(
        e.to_string().contains("kernel") && e.to_string().contains("7.3.4"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

fn same_sha(p: &Path) -> String {
    digest(p).expect("digest").sha256
}
