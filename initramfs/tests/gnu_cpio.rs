//! Acceptance tests against the host's tools: GNU cpio extracts our archives to
//! the tree we described, the packed closure of real binaries is complete (the
//! packed binary runs in a chroot of the extracted archive), and builds are
//! byte-identical.
//!
//! Needs GNU cpio (`apt-get install -y cpio`, part of `cargo xtask setup`) and,
//! for the chroot tests, root. A missing tool fails the test with the reason.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_initramfs::{Archive, BaseSpec, Found, LoaderConfig, closure, pack_binaries};

/// Extract `archive` with GNU cpio into a fresh directory.
fn gnu_extract(archive: &Path) -> tempfile::TempDir {
    let version = Command::new("cpio")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("GNU cpio is required for this test ({e}): apt-get install -y cpio")
        });
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.contains("GNU cpio"), "`cpio` is not GNU cpio: {text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = fs::File::open(archive).expect("open archive");
    let out = Command::new("cpio")
        .args(["-idv", "--no-absolute-filenames", "--quiet"])
        .current_dir(dir.path())
        .stdin(input)
        .output()
        .expect("run cpio");
    assert!(
        out.status.success(),
        "cpio -idv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn write(archive: &Archive, dir: &Path) -> PathBuf {
    let path = dir.join("out.cpio");
    let mut f = fs::File::create(&path).expect("create");
    archive.write_to(&mut f).expect("write archive");
    path
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

#[test]
fn gnu_cpio_extracts_the_same_tree() {
    let work = tempfile::tempdir().expect("tempdir");
    let host = work.path().join("host-file");
    fs::write(&host, b"from the host\n").expect("write");
    fs::set_permissions(&host, fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut a = Archive::new();
    a.add_dir("/etc", 0o750).expect("dir");
    a.add_bytes("/etc/motd", 0o644, b"hello\n".to_vec())
        .expect("bytes");
    a.add_bytes("/bin/run", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
        .expect("bytes");
    a.add_bytes("/empty", 0o400, Vec::new()).expect("bytes");
    a.add_bytes("/deep/a/b/c/odd name", 0o640, vec![0u8, 1, 2, 3, 4])
        .expect("bytes");
    a.add_file("/usr/share/host", 0o711, &host).expect("file");
    a.add_symlink("/bin/sh", "run").expect("symlink");
    a.add_symlink("/lib", "usr/lib").expect("symlink");
    let archive = write(&a, work.path());
    let root = gnu_extract(&archive);
    let r = root.path();

    let mode = |p: &str| fs::symlink_metadata(r.join(p)).expect(p).mode();
    assert_eq!(mode("etc"), 0o040750);
    assert_eq!(mode("etc/motd"), 0o100644);
    assert_eq!(mode("bin/run"), 0o100755);
    assert_eq!(mode("empty"), 0o100400);
    assert_eq!(mode("deep/a/b/c/odd name"), 0o100640);
    assert_eq!(mode("deep/a"), 0o040755, "implicit parents are 0755");
    assert_eq!(
        mode("usr/share/host"),
        0o100711,
        "the archive's mode, not the host file's"
    );
    assert_eq!(fs::read(r.join("etc/motd")).expect("read"), b"hello\n");
    assert_eq!(
        fs::read(r.join("usr/share/host")).expect("read"),
        b"from the host\n"
    );
    assert_eq!(
        fs::read(r.join("deep/a/b/c/odd name")).expect("read"),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(fs::read(r.join("empty")).expect("read"), b"");
    assert_eq!(
        fs::read_link(r.join("bin/sh")).expect("link"),
        Path::new("run")
    );
    assert_eq!(
        fs::read_link(r.join("lib")).expect("link"),
        Path::new("usr/lib")
    );

    // Nothing else was extracted.
    let mut all = Vec::new();
    let mut stack = vec![r.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            all.push(
                e.path()
                    .strip_prefix(r)
                    .expect("prefix")
                    .display()
                    .to_string(),
            );
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            }
        }
    }
    all.sort();
    assert_eq!(all.len(), a.len(), "{all:?}");
}

/// Pack `binary` with its closure, extract with GNU cpio, check each file.
fn packed_closure_is_complete(binary: &Path, guest: &str) -> tempfile::TempDir {
    let c = closure(binary, guest, &LoaderConfig::default()).expect("closure");
    let archive = BaseSpec::new()
        .binary(binary, guest)
        .archive()
        .expect("archive");
    let work = tempfile::tempdir().expect("tempdir");
    let root = gnu_extract(&write(&archive, work.path()));
    for f in &c.files {
        let inside = root.path().join(f.guest.trim_start_matches('/'));
        let packed = fs::read(&inside).unwrap_or_else(|e| panic!("{} not extracted: {e}", f.guest));
        assert_eq!(
            packed,
            fs::read(&f.host).expect("read host file"),
            "{}",
            f.guest
        );
    }
    // What ldd (the host's loader) resolves must be among them, by file name.
    let ldd = Command::new("ldd").arg(binary).output().expect("run ldd");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    for line in ldd.lines() {
        let Some(lib) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        let name = Path::new(lib).file_name().expect("file name");
        assert!(
            c.files
                .iter()
                .any(|f| Path::new(&f.guest).file_name() == Some(name)),
            "ldd resolves {lib} but the closure has {:?}",
            c.files
        );
    }
    root
}

/// Run `guest` with `args` in a chroot of `root`: the loader there sees only
/// what was packed. Needs root (as on the development machines and CI).
fn run_in_chroot(root: &Path, guest: &str, args: &[&str]) -> String {
    assert!(
        is_root(),
        "chroot needs root; run the tests as root (the CI machines do)"
    );
    let out = Command::new("/usr/sbin/chroot")
        .arg(root)
        .arg(guest)
        .args(args)
        .env_clear()
        .output()
        .expect("run chroot");
    assert!(
        out.status.success(),
        "{guest} failed in the packed root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bin_ls_closure_runs_from_the_archive() {
    let root = packed_closure_is_complete(Path::new("/bin/ls"), "/bin/ls");
    let c = closure(Path::new("/bin/ls"), "/bin/ls", &LoaderConfig::default()).expect("closure");
    for want in ["libselinux.so.1", "libpcre2-8.so.0", "libc.so.6"] {
        assert!(
            c.files.iter().any(|f| f.guest.ends_with(want)),
            "{want}: {:?}",
            c.files
        );
    }
    assert!(c.files.iter().any(|f| f.found == Found::Interpreter));
    let listing = run_in_chroot(root.path(), "/bin/ls", &["/"]);
    assert!(listing.contains("bin"), "{listing}");
}

#[test]
fn rust_test_binary_closure_runs_from_the_archive_as_init() {
    // This very test binary: a dynamically linked Rust binary, packed as /init.
    let me = std::env::current_exe().expect("current exe");
    let root = packed_closure_is_complete(&me, "/init");
    let list = run_in_chroot(root.path(), "/init", &["--list"]);
    assert!(
        list.contains("rust_test_binary_closure_runs_from_the_archive_as_init"),
        "{list}"
    );
}

#[test]
fn builds_are_byte_identical() {
    let work = tempfile::tempdir().expect("tempdir");
    let a = work.path().join("a.cpio");
    let b = work.path().join("b.cpio");
    let bins = [
        PathBuf::from("/bin/ls"),
        std::env::current_exe().expect("exe"),
    ];
    pack_binaries(&bins, &a).expect("pack a");
    // Touch a copy so times and inodes differ; the output must not.
    let copy = work.path().join("bin");
    fs::create_dir(&copy).expect("mkdir");
    let mut again = Vec::new();
    for bin in &bins {
        let c = copy.join(bin.file_name().expect("name"));
        fs::copy(bin, &c).expect("copy");
        again.push(c);
    }
    let report = pack_binaries(&again, &b).expect("pack b");
    assert_eq!(fs::read(&a).expect("read a"), fs::read(&b).expect("read b"));
    assert!(report.files.iter().any(|f| f.guest == "/bin/ls"));
}
