//! The shared-library closure of a binary: every file the dynamic loader opens
//! before `main`, and the guest path it opens it at.
//!
//! The search follows glibc's `ld.so(8)` rules for a process started with an
//! empty environment (the guest's init has no `LD_LIBRARY_PATH`):
//!
//! 1. a `DT_NEEDED` name with a `/` is opened as is;
//! 2. a name already loaded (by `DT_NEEDED` name or `DT_SONAME`) is not searched again;
//! 3. unless the requesting object has `DT_RUNPATH`: the `DT_RPATH` of the
//!    requester, then of the object that loaded it, up to the executable;
//! 4. the requester's own `DT_RUNPATH` (it does not apply to grandchildren);
//! 5. `/etc/ld.so.cache`;
//! 6. the default directories.
//!
//! Objects are loaded breadth first, as the loader does. `$ORIGIN` (and
//! `${ORIGIN}`) expands to the directory of the requesting object: on the host
//! to find the file, in the guest to place it, so a binary packed as `/init`
//! with `RUNPATH=$ORIGIN/../lib` gets its libraries under `/lib`. Entries
//! with other tokens (`$LIB`, `$PLATFORM`) or relative entries are skipped.
//! A file found that is not ELF or has another class or machine than the binary
//! is skipped, as the loader skips it. Next to each library found in directory
//! `D`, the variants `D/glibc-hwcaps/*/NAME` are packed too, so a guest CPU that
//! picks one finds it.
//!
//! Libraries resolved from the cache are packed at the path the cache names. If
//! one of them lies outside the default directories, the guest's loader can only
//! find it through the cache, so the host's cache is packed at the same path.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::elf::ElfInfo;
use crate::error::{InitramfsError, Result, io};
use crate::ldcache::LdCache;

/// Where the loader looks: the ld.so cache and the default directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// The ld.so cache to consult, if any (the host's `/etc/ld.so.cache` by default).
    pub ld_cache: Option<PathBuf>,
    /// Directories searched last, in order.
    pub default_dirs: Vec<PathBuf>,
}

impl Default for LoaderConfig {
    /// The host's configuration: `/etc/ld.so.cache` when it exists, and the
    /// directories glibc searches on Debian (multiarch) and elsewhere (`lib64`).
    fn default() -> Self {
        let cache = PathBuf::from("/etc/ld.so.cache");
        let triplet = multiarch_triplet();
        let mut dirs = Vec::new();
        if let Some(t) = triplet {
            dirs.push(PathBuf::from(format!("/lib/{t}")));
            dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
        }
        if cfg!(target_pointer_width = "64") {
            dirs.push(PathBuf::from("/lib64"));
            dirs.push(PathBuf::from("/usr/lib64"));
        }
        dirs.push(PathBuf::from("/lib"));
        dirs.push(PathBuf::from("/usr/lib"));
        Self {
            ld_cache: cache.exists().then_some(cache),
            default_dirs: dirs,
        }
    }
}

/// Debian's multiarch directory name for the host architecture.
fn multiarch_triplet() -> Option<&'static str> {
    if cfg!(target_arch = "x86_64") {
        Some("x86_64-linux-gnu")
    } else if cfg!(target_arch = "aarch64") {
        Some("aarch64-linux-gnu")
    } else if cfg!(target_arch = "x86") {
        Some("i386-linux-gnu")
    } else if cfg!(target_arch = "riscv64") {
        Some("riscv64-linux-gnu")
    } else {
        None
    }
}

/// How a file of the closure was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Found {
    /// The binary itself.
    Binary,
    /// The program interpreter named by `PT_INTERP`.
    Interpreter,
    /// A `DT_NEEDED` name that is a path.
    Path,
    /// A `DT_RPATH` directory.
    Rpath,
    /// A `DT_RUNPATH` directory.
    Runpath,
    /// The ld.so cache.
    LdCache,
    /// A default directory.
    DefaultDir,
    /// A `glibc-hwcaps` variant next to a library found otherwise.
    HwcapsVariant,
    /// The ld.so cache file itself, packed because a library needs it to be found.
    CacheFile,
}

/// One file to pack: where it is on the host and where the guest's loader opens it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClosureFile {
    /// Absolute guest path.
    pub guest: String,
    /// Host path to read (symlinks are followed when packing).
    pub host: PathBuf,
    /// How it was found.
    pub found: Found,
}

/// The closure of one binary: the binary, its interpreter and every library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The files, the binary first, then in load order.
    pub files: Vec<ClosureFile>,
}

struct Object {
    host: PathBuf,
    guest: String,
    info: ElfInfo,
    parent: Option<usize>,
}

/// Compute the closure of the binary at `host`, to be placed at `guest`.
pub fn closure(host: &Path, guest: &str, config: &LoaderConfig) -> Result<Closure> {
    let guest = absolute_guest(guest)?;
    let info = ElfInfo::read(host)?;
    let mut files = vec![ClosureFile {
        guest: guest.clone(),
        host: host.to_owned(),
        found: Found::Binary,
    }];
    let mut resolver = Resolver {
        binary: host,
        abi: info.abi,
        config,
        cache: None,
        names: HashMap::new(),
        identities: HashMap::new(),
        objects: Vec::new(),
        needs_cache_file: false,
    };
    // $ORIGIN of the executable is the directory of its real path.
    let real = std::fs::canonicalize(host).map_err(io(host, "resolve"))?;
    if let Some(interp) = &info.interp {
        let ipath = PathBuf::from(interp);
        let iinfo = ElfInfo::read(&ipath)?;
        files.push(ClosureFile {
            guest: interp.clone(),
            host: ipath.clone(),
            found: Found::Interpreter,
        });
        // The loader is already mapped: its soname satisfies DT_NEEDED entries naming it.
        let id = resolver.objects.len();
        if let Some(soname) = &iinfo.soname {
            resolver.names.insert(soname.clone(), id);
        }
        resolver.names.insert(interp.clone(), id);
        if let Some(k) = resolver.identity(&ipath) {
            resolver.identities.insert(k, id);
        }
        resolver.objects.push(Object {
            host: ipath,
            guest: interp.clone(),
            info: iinfo,
            parent: None,
        });
    }
    let main = resolver.objects.len();
    if let Some(k) = resolver.identity(host) {
        resolver.identities.insert(k, main);
    }
    resolver.objects.push(Object {
        host: real,
        guest,
        info,
        parent: None,
    });
    let mut queue = VecDeque::from([main]);
    while let Some(requester) = queue.pop_front() {
        let needed = resolver.objects[requester].info.needed.clone();
        for name in needed {
            if resolver.names.contains_key(&name) {
                continue;
            }
            let (candidate, found) = resolver.search(&name, requester)?;
            if let Some(&id) = resolver
                .identity(&candidate.host)
                .and_then(|k| resolver.identities.get(&k))
            {
                resolver.names.insert(name, id);
                continue;
            }
            let id = resolver.load(candidate.clone(), requester, &name)?;
            files.push(ClosureFile {
                guest: candidate.guest.clone(),
                host: candidate.host.clone(),
                found,
            });
            queue.push_back(id);
            for variant in hwcaps_variants(&candidate, &name) {
                if resolver.compatible(&variant.host) {
                    let vid = resolver.load(variant.clone(), requester, &name)?;
                    files.push(ClosureFile {
                        guest: variant.guest,
                        host: variant.host,
                        found: Found::HwcapsVariant,
                    });
                    queue.push_back(vid);
                }
            }
        }
    }
    if resolver.needs_cache_file
        && let Some(cache) = &config.ld_cache
    {
        let guest =
            cache
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| InitramfsError::InvalidPath {
                    path: cache.display().to_string(),
                    reason: "the ld.so cache path is not UTF-8",
                })?;
        files.push(ClosureFile {
            guest,
            host: cache.clone(),
            found: Found::CacheFile,
        });
    }
    Ok(Closure { files })
}

#[derive(Debug, Clone)]
struct Candidate {
    host: PathBuf,
    guest: String,
}

struct Resolver<'a> {
    binary: &'a Path,
    abi: (u8, u8, u16),
    config: &'a LoaderConfig,
    cache: Option<LdCache>,
    /// Names (DT_NEEDED strings and sonames) already satisfied, to object index.
    names: HashMap<String, usize>,
    /// (dev, ino) of loaded files: the loader maps one file once, whatever the path.
    identities: HashMap<(u64, u64), usize>,
    objects: Vec<Object>,
    needs_cache_file: bool,
}

impl Resolver<'_> {
    fn identity(&self, path: &Path) -> Option<(u64, u64)> {
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    fn compatible(&self, path: &Path) -> bool {
        path.is_file() && ElfInfo::read(path).is_ok_and(|i| i.abi == self.abi)
    }

    fn load(&mut self, c: Candidate, requester: usize, name: &str) -> Result<usize> {
        let info = ElfInfo::read(&c.host)?;
        let id = self.objects.len();
        self.names.insert(name.to_owned(), id);
        if let Some(soname) = &info.soname {
            self.names.entry(soname.clone()).or_insert(id);
        }
        if let Some(k) = self.identity(&c.host) {
            self.identities.entry(k).or_insert(id);
        }
        self.objects.push(Object {
            host: c.host,
            guest: c.guest,
            info,
            parent: Some(requester),
        });
        Ok(id)
    }

    fn search(&mut self, name: &str, requester: usize) -> Result<(Candidate, Found)> {
        let mut searched = Vec::new();
        if name.contains('/') {
            if name.starts_with('/') && self.compatible(Path::new(name)) {
                let c = Candidate {
                    host: PathBuf::from(name),
                    guest: name.to_owned(),
                };
                return Ok((c, Found::Path));
            }
            return Err(self.missing(name, requester, vec![name.to_owned()]));
        }
        let req = &self.objects[requester];
        if req.info.runpath.is_none() {
            let mut at = Some(requester);
            while let Some(i) = at {
                let obj = &self.objects[i];
                if let (Some(rpath), None) = (&obj.info.rpath, &obj.info.runpath)
                    && let Some(c) = self.in_path_list(rpath, i, name, &mut searched)
                {
                    return Ok((c, Found::Rpath));
                }
                at = obj.parent;
            }
        }
        if let Some(runpath) = &self.objects[requester].info.runpath
            && let Some(c) = self.in_path_list(runpath, requester, name, &mut searched)
        {
            return Ok((c, Found::Runpath));
        }
        if let Some(c) = self.in_cache(name, &mut searched)? {
            let in_default = Path::new(&c.guest)
                .parent()
                .is_some_and(|d| self.config.default_dirs.iter().any(|x| x == d));
            self.needs_cache_file |= !in_default;
            return Ok((c, Found::LdCache));
        }
        for dir in &self.config.default_dirs {
            let host = dir.join(name);
            searched.push(dir.display().to_string());
            if self.compatible(&host)
                && let Some(guest) = host.to_str()
            {
                return Ok((
                    Candidate {
                        guest: guest.to_owned(),
                        host,
                    },
                    Found::DefaultDir,
                ));
            }
        }
        Err(self.missing(name, requester, searched))
    }

    fn in_cache(&mut self, name: &str, searched: &mut Vec<String>) -> Result<Option<Candidate>> {
        let Some(path) = &self.config.ld_cache else {
            return Ok(None);
        };
        if self.cache.is_none() {
            self.cache = Some(LdCache::read(path)?);
        }
        searched.push(path.display().to_string());
        let cache = self.cache.as_ref().expect("filled just above");
        let hit = cache
            .lookup(name)
            .find(|p| !p.contains("/glibc-hwcaps/") && self.compatible(Path::new(p)))
            .map(|p| Candidate {
                host: PathBuf::from(p),
                guest: p.to_owned(),
            });
        Ok(hit)
    }

    /// Search the colon-separated `list` of `objects[owner]` for `name`.
    fn in_path_list(
        &self,
        list: &str,
        owner: usize,
        name: &str,
        searched: &mut Vec<String>,
    ) -> Option<Candidate> {
        let obj = &self.objects[owner];
        for entry in list.split(':') {
            let Some((host_dir, guest_dir)) = expand(entry, &obj.host, &obj.guest) else {
                continue;
            };
            searched.push(host_dir.display().to_string());
            let host = host_dir.join(name);
            if self.compatible(&host) {
                return Some(Candidate {
                    host,
                    guest: join_guest(&guest_dir, name),
                });
            }
        }
        None
    }

    fn missing(&self, name: &str, requester: usize, searched: Vec<String>) -> InitramfsError {
        let mut seen = BTreeSet::new();
        let searched: Vec<_> = searched
            .into_iter()
            .filter(|s| seen.insert(s.clone()))
            .collect();
        InitramfsError::MissingLibrary {
            binary: self.binary.to_owned(),
            library: name.to_owned(),
            needed_by: self.objects[requester].host.clone(),
            searched: searched.join(", "),
        }
    }
}

/// Expand one search-path entry for an object at (`host`, `guest`): the host
/// directory to look in and the guest directory it stands for. `None` for
/// entries the loader would resolve against its working directory or with
/// tokens other than `$ORIGIN`.
fn expand(entry: &str, host: &Path, guest: &str) -> Option<(PathBuf, String)> {
    let rest = entry
        .strip_prefix("${ORIGIN}")
        .or_else(|| entry.strip_prefix("$ORIGIN"))
        .filter(|r| r.is_empty() || r.starts_with('/'));
    if rest.is_none() && !entry.starts_with('/') {
        return None;
    }
    if entry.contains('$') && rest.is_none_or(|r| r.contains('$')) {
        return None;
    }
    match rest {
        Some(rest) => {
            let host_dir = host.parent()?.to_owned();
            let host_dir = if rest.is_empty() {
                host_dir
            } else {
                host_dir.join(rest.trim_start_matches('/'))
            };
            let guest_dir = join_guest(parent_guest(guest), rest);
            Some((host_dir, guest_dir))
        }
        None => Some((PathBuf::from(entry), normalize_guest(entry))),
    }
}

fn parent_guest(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `base` + `/` + `rel`, normalised lexically (`..` at the root stays at the root).
fn join_guest(base: &str, rel: &str) -> String {
    normalize_guest(&format!("{base}/{rel}"))
}

fn normalize_guest(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn absolute_guest(guest: &str) -> Result<String> {
    crate::cpio::archive_name(guest).map(|n| format!("/{n}"))
}

/// `D/glibc-hwcaps/*/NAME` for a library found as `D/NAME`, in name order.
fn hwcaps_variants(found: &Candidate, name: &str) -> Vec<Candidate> {
    let (Some(host_dir), guest_dir) = (found.host.parent(), parent_guest(&found.guest)) else {
        return Vec::new();
    };
    let Ok(levels) = std::fs::read_dir(host_dir.join("glibc-hwcaps")) else {
        return Vec::new();
    };
    let mut levels: Vec<String> = levels
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    levels.sort();
    levels
        .into_iter()
        .map(|level| Candidate {
            host: host_dir.join("glibc-hwcaps").join(&level).join(name),
            guest: join_guest(guest_dir, &format!("glibc-hwcaps/{level}/{name}")),
        })
        .filter(|c| c.host.is_file())
        .collect()
}

/// Merge the closures of several binaries: one entry per guest path. Two
/// binaries needing different host files at the same guest path is an error.
pub fn merge(closures: &[Closure]) -> Result<Vec<ClosureFile>> {
    let mut by_guest: HashMap<&str, &ClosureFile> = HashMap::new();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for file in closures.iter().flat_map(|c| &c.files) {
        match by_guest.get(file.guest.as_str()) {
            Some(prev) if prev.host != file.host => {
                return Err(InitramfsError::Conflict {
                    path: file.guest.clone(),
                    first: prev.host.display().to_string(),
                    second: file.host.display().to_string(),
                });
            }
            Some(_) => {}
            None => {
                by_guest.insert(&file.guest, file);
                if seen.insert(&file.guest) {
                    out.push(file.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_expands_on_both_sides() {
        let (h, g) =
            expand("$ORIGIN/../lib", Path::new("/home/u/t/bin/x"), "/init").expect("expands");
        assert_eq!(h, Path::new("/home/u/t/bin/../lib"));
        assert_eq!(g, "/lib");
        let (h, g) = expand("${ORIGIN}", Path::new("/a/b"), "/bin/b").expect("expands");
        assert_eq!((h.as_path(), g.as_str()), (Path::new("/a"), "/bin"));
        assert_eq!(
            expand("/opt/lib/", Path::new("/a/b"), "/b").map(|x| x.1),
            Some("/opt/lib".to_owned())
        );
        assert!(expand("lib", Path::new("/a/b"), "/b").is_none());
        assert!(expand("", Path::new("/a/b"), "/b").is_none());
        assert!(expand("/usr/$LIB", Path::new("/a/b"), "/b").is_none());
        assert!(expand("$ORIGINAL", Path::new("/a/b"), "/b").is_none());
    }

    #[test]
    fn bin_ls_closure_matches_the_loader() {
        let c =
            closure(Path::new("/bin/ls"), "/bin/ls", &LoaderConfig::default()).expect("closure");
        let guests: Vec<&str> = c.files.iter().map(|f| f.guest.as_str()).collect();
        for want in ["libselinux.so.1", "libc.so.6", "libpcre2-8.so.0"] {
            assert!(
                guests.iter().any(|g| g.ends_with(&format!("/{want}"))),
                "{want} missing from {guests:?}"
            );
        }
        assert!(
            guests.contains(&"/lib64/ld-linux-x86-64.so.2") || !cfg!(target_arch = "x86_64"),
            "{guests:?}"
        );
        assert_eq!(c.files[0].found, Found::Binary);
    }

    #[test]
    fn missing_library_names_binary_and_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LoaderConfig {
            ld_cache: None,
            default_dirs: vec![dir.path().to_owned()],
        };
        let err = closure(Path::new("/bin/ls"), "/bin/ls", &cfg).expect_err("no libraries there");
        let msg = err.to_string();
        assert!(msg.contains("/bin/ls") && msg.contains(".so"), "{msg}");
    }

    #[test]
    fn merge_rejects_two_hosts_for_one_guest_path() {
        let f = |host: &str| ClosureFile {
            guest: "/lib/a.so".into(),
            host: host.into(),
            found: Found::DefaultDir,
        };
        let ok = merge(&[
            Closure {
                files: vec![f("/x")],
            },
            Closure {
                files: vec![f("/x")],
            },
        ])
        .expect("same file");
        assert_eq!(ok.len(), 1);
        assert!(
            merge(&[
                Closure {
                    files: vec![f("/x")]
                },
                Closure {
                    files: vec![f("/y")]
                }
            ])
            .is_err()
        );
    }
}
