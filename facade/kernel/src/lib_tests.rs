//! Tests of the resolver and the kernel cache (`lib.rs`).

use super::*;

/// A local apt repository (no signature, `[trusted=yes]`) holding Debian
/// 7.x-layout kernel packages, built with dpkg-deb.
struct LocalRepo {
    dir: tempfile::TempDir,
    packages: String,
}

impl LocalRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("dists/test/main/binary-amd64")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("pool")).expect("mkdir");
        LocalRepo {
            dir,
            packages: String::new(),
        }
    }

    /// Adds `linux-binary-unsigned-<release>` with a bzImage and a config.
    fn add_kernel(&mut self, release: &str, config: &str) {
        let name = format!("linux-binary-unsigned-{release}");
        let root = self.dir.path().join(format!("build-{release}"));
        let moddir = root.join("usr/lib/modules").join(release);
        std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
        std::fs::create_dir_all(&moddir).expect("mkdir");
        let bz = image::tests::tiny_bzimage(&image::tests::tiny_vmlinux(b"btf-of-the-test"));
        std::fs::write(moddir.join("vmlinuz.unsigned"), bz).expect("write");
        std::fs::write(moddir.join("config"), config).expect("write");
        self.publish(&name, &root);
    }

    /// Adds `linux-modules-<release>` with the KVM modules, xz-compressed.
    fn add_modules(&mut self, release: &str) {
        let name = modules::package_name(release);
        let root = self.dir.path().join(format!("build-modules-{release}"));
        for (module, path) in modules::KVM_MODULES {
            let p = root
                .join("usr/lib/modules")
                .join(release)
                .join(format!("{path}.xz"));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            let mut xz = Vec::new();
            lzma_rs::xz_compress(&mut module.as_bytes(), &mut xz).expect("xz");
            std::fs::write(p, xz).expect("write");
        }
        self.publish(&name, &root);
    }

    /// Builds `root` into the .deb of package `name` and lists it.
    fn publish(&mut self, name: &str, root: &Path) {
        std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {name}\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test kernel\n"),
        )
        .expect("write");
        let deb = self.dir.path().join(format!("pool/{name}_1_amd64.deb"));
        let st = std::process::Command::new("dpkg-deb")
            .args(["-b", "-Zgzip"])
            .arg(root)
            .arg(&deb)
            .output()
            .expect("dpkg-deb runs (Debian's dpkg)");
        assert!(
            st.status.success(),
            "dpkg-deb: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let bytes = std::fs::read(&deb).expect("read deb");
        self.packages.push_str(&format!(
            "Package: {name}\nVersion: 1\nArchitecture: amd64\nFilename: pool/{name}_1_amd64.deb\nSize: {}\nSHA256: {}\nDescription: test kernel\n\n",
            bytes.len(),
            cache::sha256_hex(&bytes)
        ));
        std::fs::write(
            self.dir
                .path()
                .join("dists/test/main/binary-amd64/Packages"),
            &self.packages,
        )
        .expect("write Packages");
    }

    fn source(&self) -> debian::FetchSource {
        debian::FetchSource {
            uri: format!("file:{}", self.dir.path().display()),
            suites: vec!["test".into()],
            trusted: true,
        }
    }
}

fn fetch_from(src: debian::FetchSource, cache: &KernelCache) -> Result<FetchOutcome, KernelError> {
    let opts = FetchOptions {
        cache: cache.clone(),
        offline: false,
        suites: None,
        source: Some(src),
    };
    fetch(&opts, &mut |_| {})
}

#[test]
fn fetch_from_a_repository_then_reuse_the_cache() {
    let mut repo = LocalRepo::new();
    repo.add_kernel("9.9.1+deb13-cloud-amd64", "CONFIG_SCHED_CLASS_EXT=y\n");
    repo.add_kernel(
        "9.9.2+deb13-cloud-amd64",
        "# CONFIG_SCHED_CLASS_EXT is not set\n",
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(cache_dir.path().join("kernels"));
    // The newest package lacks sched_ext: the newest one that has it wins.
    let first = fetch_from(repo.source(), &cache).expect("fetch");
    assert!(matches!(first, FetchOutcome::Fetched(_)), "{first:?}");
    assert_eq!(first.kernel().metadata.release, "9.9.1+deb13-cloud-amd64");
    assert!(first.kernel().vmlinux().is_file());
    // No linux-modules package: the kernel is cached without its modules.
    assert!(!modules::has_kvm_modules(&first.kernel().dir));
    // Again, now with the modules published: the kernel is not downloaded
    // again, the cached kernel is named, and its KVM modules are kept.
    repo.add_modules("9.9.1+deb13-cloud-amd64");
    let second = fetch_from(repo.source(), &cache).expect("fetch again");
    assert!(
        matches!(second, FetchOutcome::AlreadyCached(_)),
        "{second:?}"
    );
    assert!(modules::has_kvm_modules(&second.kernel().dir));
    let kvm =
        std::fs::read(modules::modules_dir(&second.kernel().dir).join("kvm.ko")).expect("kvm.ko");
    assert_eq!(kvm, b"kvm", "decompressed");
    // Offline: the cache alone.
    let offline = fetch(
        &FetchOptions {
            cache: cache.clone(),
            offline: true,
            suites: None,
            source: None,
        },
        &mut |_| {},
    )
    .expect("offline");
    assert_eq!(offline.kernel().metadata.release, "9.9.1+deb13-cloud-amd64");
}

#[test]
fn no_package_with_sched_ext_is_an_error_naming_what_was_checked() {
    let mut repo = LocalRepo::new();
    repo.add_kernel(
        "9.9.2+deb13-cloud-amd64",
        "# CONFIG_SCHED_CLASS_EXT is not set\n",
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(cache_dir.path().join("kernels"));
    let err = fetch_from(repo.source(), &cache).expect_err("no sched_ext");
    assert!(
        matches!(err, KernelError::NoSchedExtPackage { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("9.9.2+deb13-cloud-amd64 (no sched_ext)"),
        "{err}"
    );
    let empty = LocalRepo::new();
    std::fs::write(
        empty
            .dir
            .path()
            .join("dists/test/main/binary-amd64/Packages"),
        "",
    )
    .expect("write");
    let err = fetch_from(empty.source(), &cache).expect_err("no package");
    assert!(
        err.to_string()
            .contains("no cloud-amd64 kernel package found"),
        "{err}"
    );
}

#[test]
fn unreachable_mirror_is_named() {
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(cache_dir.path().join("kernels"));
    // Port 9 on loopback: nothing listens, the connection is refused.
    let src = debian::FetchSource {
        uri: "http://127.0.0.1:9/debian".into(),
        suites: vec!["test".into()],
        trusted: true,
    };
    let err = fetch_from(src, &cache).expect_err("unreachable");
    assert!(
        matches!(err, KernelError::MirrorUnreachable { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:9") && text.contains("--offline"),
        "{text}"
    );
}

#[test]
fn rfc3339_known_dates() {
    assert_eq!(cache::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(cache::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(cache::rfc3339(1_795_309_261), "2026-11-22T01:01:01Z");
}

#[test]
fn cache_insert_list_and_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(dir.path().join("kernels"));
    assert!(cache.newest().is_none());
    let elf = image::tests::tiny_vmlinux(b"btf");
    let bz = image::tests::tiny_bzimage(&elf);
    let cfg = "CONFIG_SCHED_CLASS_EXT=y\n";
    cache
        .insert("7.3.4+deb13-cloud-amd64", "test", &bz, cfg)
        .expect("insert");
    cache
        .insert("7.3.10+deb13-cloud-amd64", "test", &bz, cfg)
        .expect("insert");
    let list = cache.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].metadata.release, "7.3.10+deb13-cloud-amd64");
    assert_eq!(std::fs::read(list[0].vmlinux()).expect("vmlinux"), elf);
    // No scratch directories are left behind.
    let names: Vec<_> = std::fs::read_dir(cache.dir())
        .expect("read")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A kernel without sched_ext or without BTF never enters the cache.
    let err = cache.insert("x", "t", &bz, "# CONFIG_SCHED_CLASS_EXT is not set\n");
    assert!(matches!(err, Err(KernelError::NoSchedExt)));
    let no_btf = image::tests::tiny_bzimage(&image::tests::tiny_vmlinux(b""));
    assert!(matches!(
        cache.insert("y", "t", &no_btf, cfg),
        Err(KernelError::NoBtf)
    ));
    // A damaged entry (truncated vmlinux) is not listed.
    std::fs::write(list[0].vmlinux(), b"\x7fELF").expect("truncate");
    assert_eq!(cache.list().len(), 1);
}

#[test]
fn versions_resolve_in_the_cache_and_clean_keeps_the_recent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(dir.path().join("kernels"));
    let bz = image::tests::tiny_bzimage(&image::tests::tiny_vmlinux(b"btf"));
    let cfg = "CONFIG_SCHED_CLASS_EXT=y\n";
    for r in [
        "7.0.9+deb13-cloud-amd64",
        "7.0.13+deb13-cloud-amd64",
        "7.3.4+deb13-cloud-amd64",
    ] {
        cache
            .insert(r, "debian linux-image-x 1", &bz, cfg)
            .expect("insert");
    }
    let spec = |s: &str| s.parse::<KernelSpec>().expect("spec");
    let k = resolve(Some(&spec("7.0")), &cache).expect("7.0 cached");
    assert_eq!(k.release.as_deref(), Some("7.0.13+deb13-cloud-amd64"));
    let id = k.id().expect("id");
    assert_eq!(id.label(), "7.0.13");
    assert!(matches!(id.source, KernelSource::Package { .. }), "{id:?}");
    assert_eq!(id.config_sha256.as_deref().map(str::len), Some(64));
    let err = resolve(Some(&spec("6.18")), &cache).expect_err("not cached");
    assert!(
        err.to_string().contains("cargo ktstr kernel fetch 6.18"),
        "{err}"
    );
    let err = resolve(Some(&spec("7.0..7.3")), &cache).expect_err("range");
    assert!(matches!(err, KernelError::SeveralKernels { .. }), "{err}");
    let err = resolve(Some(&spec("git+file:///l#sha=1")), &cache).expect_err("git");
    assert!(matches!(err, KernelError::NotBuilt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cargo ktstr kernel build git+file:///l#sha=1"),
        "{err}"
    );
    // 7.0.13 was used last: clean --keep 1 keeps it.
    let gone = cache.clean(1).expect("clean");
    assert_eq!(gone.len(), 2);
    let left: Vec<String> = cache
        .list()
        .into_iter()
        .map(|k| k.metadata.release)
        .collect();
    assert_eq!(left, ["7.0.13+deb13-cloud-amd64"]);
    // A cap of 0 removes nothing used in the last ten minutes.
    assert!(cache.evict(0, &[]).expect("evict").is_empty());
    // A scratch directory of a dead process goes; no entry is listed from it.
    let stale = cache.dir().join(".tmp-999999999-1");
    std::fs::create_dir_all(&stale).expect("mkdir");
    cache.remove_stale_scratch();
    assert!(!stale.exists());
}

#[test]
fn explicit_paths_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(dir.path().join("kernels"));
    let missing = from_path(&dir.path().join("nope"), KernelOrigin::Explicit, &cache);
    assert!(
        missing
            .expect_err("missing")
            .to_string()
            .contains("no such file")
    );
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"hello").expect("write");
    let err = from_path(&junk, KernelOrigin::Explicit, &cache).expect_err("junk");
    assert!(
        err.to_string()
            .contains("neither an ELF vmlinux nor an x86 bzImage"),
        "{err}"
    );
    let elf = dir.path().join("vmlinux");
    std::fs::write(&elf, image::tests::tiny_vmlinux(b"btf")).expect("write");
    let k = from_path(&elf, KernelOrigin::Explicit, &cache).expect("vmlinux");
    assert_eq!(k.vmlinux, elf);
    let k = from_path(dir.path(), KernelOrigin::Explicit, &cache).expect("tree");
    assert_eq!(k.vmlinux, elf);
    let empty = tempfile::tempdir().expect("tempdir");
    let err = from_path(empty.path(), KernelOrigin::Explicit, &cache).expect_err("empty dir");
    assert!(err.to_string().contains("has no vmlinux"), "{err}");
}

/// A tree given by path boots the build of the state it is in now: after a
/// checkout back, the older build; with uncommitted changes, nothing but an
/// error that says the tree changed and which command builds it.
#[test]
fn a_tree_boots_the_build_of_its_state_now_or_says_it_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(dir.path().join("kernels"));
    let built = built_cache(&cache);
    let linux = dir.path().join("linux");
    std::fs::create_dir_all(&linux).expect("mkdir");
    std::fs::write(linux.join("Kconfig"), "# Kconfig\n").expect("write");
    std::fs::write(linux.join("Makefile"), "# Makefile\n").expect("write");
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost", "-C"])
            .arg(&linux)
            .args(args)
            .status()
            .expect("git runs")
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "A"]);
    let canon = linux.canonicalize().expect("canonical");
    let spec = KernelSpec::Path(linux.clone());
    let err = resolve(Some(&spec), &cache).expect_err("never built");
    assert!(matches!(err, KernelError::NotBuilt { .. }), "{err}");

    let insert = |key: &str| {
        let (tree, dirty_sha256) = tree::identity(&canon).expect("identity");
        let tmp = built.scratch().expect("scratch");
        let elf = image::tests::tiny_vmlinux(b"btf");
        std::fs::write(tmp.0.join("vmlinux"), &elf).expect("write");
        let from = BuiltFrom {
            spec: canon.display().to_string(),
            tree,
            dirty_sha256,
            fragment_sha256: "f".repeat(64),
            build_seconds: 1,
        };
        let release = format!("7.3.4-ktstr-{key}");
        built
            .insert_built(
                tmp,
                key,
                &release,
                &image::tests::tiny_bzimage(&elf),
                &elf,
                "CONFIG_SCHED_CLASS_EXT=y\n",
                from,
            )
            .expect("insert");
    };
    let release = || {
        resolve(Some(&spec), &cache)
            .map(|k| k.release.unwrap_or_default())
            .map_err(|e| e.to_string())
    };
    insert("aaaa");
    assert_eq!(release().as_deref(), Ok("7.3.4-ktstr-aaaa"));
    std::fs::write(linux.join("Makefile"), "# Makefile, B\n").expect("write");
    git(&["commit", "-q", "-am", "B"]);
    insert("bbbb");
    assert_eq!(release().as_deref(), Ok("7.3.4-ktstr-bbbb"));
    // Back at A: A's build, though B's is newer.
    git(&["checkout", "-q", "HEAD~1"]);
    assert_eq!(release().as_deref(), Ok("7.3.4-ktstr-aaaa"));
    // Changed and not built: an error naming both states and the fix.
    std::fs::write(linux.join("Kconfig"), "# Kconfig, edited\n").expect("write");
    let err = release().expect_err("changed since its build");
    assert!(
        err.contains("changed since its last build")
            && err.contains("uncommitted changes")
            && err.contains("cargo ktstr kernel build"),
        "{err}"
    );
}

/// Two builds of one spec (two configs): the one the last build named (it
/// touches what it finds in the cache) is what test binaries boot, not the
/// one built last.
#[test]
fn a_source_spec_boots_the_build_its_last_build_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::new(dir.path().join("kernels"));
    let built = built_cache(&cache);
    let insert = |key: &str| {
        let tmp = built.scratch().expect("scratch");
        let elf = image::tests::tiny_vmlinux(b"btf");
        std::fs::write(tmp.0.join("vmlinux"), &elf).expect("write");
        let from = BuiltFrom {
            spec: "source:7.3".into(),
            tree: "debian linux-source-7.3 7.3.4-1~bpo13+1".into(),
            dirty_sha256: None,
            fragment_sha256: key.repeat(16),
            build_seconds: 1,
        };
        built
            .insert_built(
                tmp,
                key,
                &format!("7.3.4-ktstr-{key}"),
                &image::tests::tiny_bzimage(&elf),
                &elf,
                "CONFIG_SCHED_CLASS_EXT=y\n",
                from,
            )
            .expect("insert")
    };
    let tiny = insert("aaaa");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let _def = insert("bbbb");
    let spec: KernelSpec = "source:7.3".parse().expect("spec");
    let release = || resolve(Some(&spec), &cache).expect("built").release;
    assert_eq!(release().as_deref(), Some("7.3.4-ktstr-bbbb"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    built.touch(&tiny);
    assert_eq!(release().as_deref(), Some("7.3.4-ktstr-aaaa"));
}
