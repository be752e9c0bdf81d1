//! Kernel source trees and their identity: a local tree, a git ref cloned
//! shallow into the cache (updated by fetch), or a Debian `linux-source-X`
//! package unpacked once into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::sha256_hex;
use crate::tree::git;
use crate::{KernelError, SourceSpecError};

/// A git ref to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// The remote's default branch.
    Head,
    /// `#branch=B`.
    Branch(String),
    /// `#tag=T`.
    Tag(String),
    /// `#sha=S` (a full or abbreviated commit id).
    Sha(String),
}

/// `git+URL#ref`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSpec {
    /// Any URL git can fetch.
    pub url: String,
    /// The ref.
    pub reference: GitRef,
}

impl GitSpec {
    /// Parses the text after `git+`.
    pub fn parse(text: &str) -> Result<GitSpec, SourceSpecError> {
        let (url, frag) = match text.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (text, None),
        };
        if url.is_empty() {
            return Err(SourceSpecError::NoUrl);
        }
        let reference = match frag {
            None | Some("") => GitRef::Head,
            Some(f) => match f.split_once('=') {
                Some(("branch", b)) if !b.is_empty() => GitRef::Branch(b.into()),
                Some(("tag", t)) if !t.is_empty() => GitRef::Tag(t.into()),
                Some(("sha", s))
                    if s.len() >= 4
                        && s.len() <= 64
                        && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    GitRef::Sha(s.to_ascii_lowercase())
                }
                _ => {
                    return Err(SourceSpecError::BadRef {
                        fragment: f.to_string(),
                    });
                }
            },
        };
        Ok(GitSpec {
            url: url.to_string(),
            reference,
        })
    }
}

/// What a source spec names: a tree on disk and its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The source tree (has `Kconfig` and `Makefile`).
    pub dir: PathBuf,
    /// Its identity: `debian linux-source-7.3 7.3.4-1~bpo13+1`, `git <sha>`,
    /// or `tree <path> <newest mtime>`.
    pub identity: String,
    /// SHA-256 of the uncommitted changes of a git work tree, when any.
    pub dirty_sha256: Option<String>,
    /// Whether the tree is configured in place (has its own `.config`):
    /// built in the tree with its own config.
    pub in_tree: bool,
}

/// Whether `dir` looks like a kernel source tree.
pub fn is_kernel_tree(dir: &Path) -> bool {
    dir.join("Kconfig").is_file() && dir.join("Makefile").is_file()
}

/// A file name made of `text` (letters, digits, `.`, `-`, `_` kept).
pub fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A local tree: a git work tree is identified by its commit and the hash
/// of `git diff HEAD`; any other tree by its path and its newest file's
/// modification time.
pub fn local_tree(dir: &Path) -> Result<Tree, KernelError> {
    let dir = dir.canonicalize().map_err(|e| KernelError::io(dir, e))?;
    let in_tree = dir.join(".config").is_file();
    let (identity, dirty_sha256) = crate::tree::identity(&dir)?;
    Ok(Tree {
        identity,
        dirty_sha256,
        dir,
        in_tree,
    })
}

/// Brings `spec`'s ref into the clone at `<src_root>/git-<url hash>/src`
/// (cloned shallow once, fetched afterwards), checked out; `progress`
/// says what happens.
pub fn git_tree(
    spec: &GitSpec,
    src_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Tree, KernelError> {
    let base = src_root.join(format!("git-{}", &sha256_hex(spec.url.as_bytes())[..16]));
    let dir = base.join("src");
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(&base).map_err(|e| KernelError::io(&base, e))?;
        let tmp = base.join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let tmp_s = tmp.to_string_lossy().into_owned();
        git(None, &["init", "-q", &tmp_s])?;
        std::fs::rename(&tmp, &dir).map_err(|e| KernelError::io(&dir, e))?;
        std::fs::write(base.join("url"), &spec.url).map_err(|e| KernelError::io(&base, e))?;
    }
    let shallow = |what: &str, progress: &mut dyn FnMut(&str)| -> Result<(), KernelError> {
        progress(&format!("fetching {what} of {} (shallow)", spec.url));
        git(
            Some(&dir),
            &["fetch", "-q", "--depth", "1", &spec.url, what],
        )
        .map(drop)
    };
    let target = match &spec.reference {
        GitRef::Head => {
            shallow("HEAD", progress)?;
            "FETCH_HEAD".to_string()
        }
        GitRef::Branch(b) => {
            shallow(&format!("refs/heads/{b}"), progress)?;
            "FETCH_HEAD".to_string()
        }
        GitRef::Tag(t) => {
            shallow(&format!("refs/tags/{t}"), progress)?;
            "FETCH_HEAD".to_string()
        }
        GitRef::Sha(s) => {
            let have = git(
                Some(&dir),
                &["rev-parse", "-q", "--verify", &format!("{s}^{{commit}}")],
            );
            if have.is_err() && (s.len() < 40 || shallow(s, progress).is_err()) {
                // The server does not serve unadvertised commits (or the
                // id is abbreviated): fetch its branches and tags whole.
                progress(&format!("fetching the branches and tags of {}", spec.url));
                let mut args = vec!["fetch", "-q"];
                if dir.join(".git/shallow").exists() {
                    args.push("--unshallow");
                }
                args.extend([
                    spec.url.as_str(),
                    "+refs/heads/*:refs/ktstr/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ]);
                git(Some(&dir), &args)?;
            }
            let full = git(
                Some(&dir),
                &["rev-parse", "-q", "--verify", &format!("{s}^{{commit}}")],
            )
            .map_err(|_| KernelError::Command {
                command: format!("git fetch {}", spec.url),
                detail: format!("no commit {s} there"),
            })?;
            String::from_utf8_lossy(&full).trim().to_string()
        }
    };
    git(
        Some(&dir),
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--force",
            &target,
        ],
    )?;
    let head = git(Some(&dir), &["rev-parse", "HEAD"])?;
    let head = String::from_utf8_lossy(&head).trim().to_string();
    if !is_kernel_tree(&dir) {
        return Err(KernelError::BadPath {
            path: dir,
            reason: format!(
                "{} at {head} is not a kernel source tree (no Kconfig and Makefile at its top)",
                spec.url
            ),
        });
    }
    Ok(Tree {
        dir,
        identity: format!("git {head}"),
        dirty_sha256: None,
        in_tree: false,
    })
}

/// The Debian package of `source:<line>` (`7.3` -> `linux-source-7.3`) and
/// the version prefix it must have (`7.3.4` asks for 7.3.4).
pub fn package_of(line: &str) -> Result<(String, Option<String>), SourceSpecError> {
    let parts: Vec<&str> = line.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match parts.len() {
        2 if numeric => Ok((format!("linux-source-{line}"), None)),
        3 if numeric => Ok((
            format!("linux-source-{}.{}", parts[0], parts[1]),
            Some(line.to_string()),
        )),
        _ => Err(SourceSpecError::BadLine {
            line: line.to_string(),
        }),
    }
}

/// Unpacks the downloaded `deb` of `package` `version` into
/// `<src_root>/<slug>/src` (once: an existing tree is reused).
pub fn unpack_source_package(
    deb: &Path,
    package: &str,
    version: &str,
    src_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Tree, KernelError> {
    let base = package_dir(src_root, package, version);
    let dir = base.join("src");
    let tree = Tree {
        dir: dir.clone(),
        identity: format!("debian {package} {version}"),
        dirty_sha256: None,
        in_tree: false,
    };
    if is_kernel_tree(&dir) {
        return Ok(tree);
    }
    let tmp = base.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| KernelError::io(&tmp, e))?;
    let run = |c: &mut Command, what: &str| -> Result<(), KernelError> {
        let out = c.output().map_err(|e| KernelError::Command {
            command: what.into(),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(KernelError::Command {
                command: what.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    };
    progress(&format!("unpacking {package} {version}"));
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
        &format!("dpkg-deb -x {}", deb.display()),
    )?;
    let tarball = std::fs::read_dir(tmp.join("usr/src"))
        .map_err(|e| KernelError::io(&tmp.join("usr/src"), e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tar"))
        .ok_or_else(|| KernelError::Corrupt {
            what: format!("{package} {version} has no tarball in usr/src"),
        })?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&tmp),
        &format!("tar -xf {}", tarball.display()),
    )?;
    let top = std::fs::read_dir(&tmp)
        .map_err(|e| KernelError::io(&tmp, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| is_kernel_tree(p))
        .ok_or_else(|| KernelError::Corrupt {
            what: format!("{} holds no kernel tree", tarball.display()),
        })?;
    std::fs::rename(&top, &dir).map_err(|e| KernelError::io(&dir, e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(tree)
}

/// Where a source package's tree lives.
pub fn package_dir(src_root: &Path, package: &str, version: &str) -> PathBuf {
    src_root.join(slug(&format!("{package}_{version}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_specs() {
        let p = |s: &str| GitSpec::parse(s);
        assert_eq!(
            p("file:///l#sha=ABC1234").expect("sha").reference,
            GitRef::Sha("abc1234".into())
        );
        assert_eq!(
            p("https://h/x.git#branch=for-next").expect("b"),
            GitSpec {
                url: "https://h/x.git".into(),
                reference: GitRef::Branch("for-next".into())
            }
        );
        assert_eq!(
            p("file:///l#tag=v7.3").expect("t").reference,
            GitRef::Tag("v7.3".into())
        );
        assert_eq!(p("file:///l").expect("head").reference, GitRef::Head);
        assert!(p("file:///l#sha=xyz").is_err());
        assert!(
            p("file:///l#commit=1")
                .expect_err("bad")
                .to_string()
                .contains("#branch=NAME")
        );
        assert!(p("#sha=1234").is_err());
    }

    #[test]
    fn source_packages() {
        assert_eq!(
            package_of("7.3").expect("line"),
            ("linux-source-7.3".into(), None)
        );
        assert_eq!(
            package_of("6.12.118").expect("exact"),
            ("linux-source-6.12".into(), Some("6.12.118".into()))
        );
        assert!(package_of("seven").is_err());
        assert!(package_of("7").is_err());
        assert_eq!(
            slug("linux-source-7.3_7.3.4-1~bpo13+1"),
            "linux-source-7.3_7.3.4-1_bpo13_1"
        );
    }

    #[test]
    fn local_trees_are_identified_by_commit_and_diff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::write(t.join("Kconfig"), "config A\n").expect("write");
        std::fs::write(t.join("Makefile"), "all:\n").expect("write");
        assert!(is_kernel_tree(t));
        let plain = local_tree(t).expect("plain tree");
        assert!(plain.identity.starts_with("tree "), "{}", plain.identity);
        let g = |args: &[&str]| {
            let mut a = vec!["-c", "user.name=t", "-c", "user.email=t@t"];
            a.extend(args);
            git(Some(t), &a).expect("git")
        };
        g(&["init", "-q"]);
        g(&["add", "-A"]);
        g(&["commit", "-q", "-m", "one"]);
        let clean = local_tree(t).expect("git tree");
        assert!(clean.identity.starts_with("git "), "{}", clean.identity);
        assert_eq!(clean.dirty_sha256, None);
        std::fs::write(t.join("Kconfig"), "config B\n").expect("write");
        let dirty = local_tree(t).expect("dirty");
        assert_eq!(dirty.identity, clean.identity);
        assert!(dirty.dirty_sha256.is_some());
        assert!(!dirty.in_tree);
    }

    #[test]
    fn git_refs_of_a_local_repository_are_cloned_and_checked_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        let g = |args: &[&str]| {
            let mut a = vec!["-c", "user.name=t", "-c", "user.email=t@t"];
            a.extend(args);
            String::from_utf8(git(Some(&repo), &a).expect("git")).expect("utf8")
        };
        g(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("Kconfig"), "config A\n").expect("write");
        std::fs::write(repo.join("Makefile"), "all:\n").expect("write");
        g(&["add", "-A"]);
        g(&["commit", "-q", "-m", "one"]);
        let a = g(&["rev-parse", "HEAD"]).trim().to_string();
        std::fs::write(repo.join("Kconfig"), "config B\n").expect("write");
        g(&["commit", "-q", "-am", "two"]);
        g(&["tag", "v2"]);
        let b = g(&["rev-parse", "HEAD"]).trim().to_string();
        let url = format!("file://{}", repo.display());
        let src = dir.path().join("src");
        let mut said = Vec::new();
        let mut tree = |r: &str| {
            let spec = GitSpec::parse(&format!("{url}#{r}")).expect("spec");
            git_tree(&spec, &src, &mut |l| said.push(l.to_string())).expect("tree")
        };
        let ta = tree(&format!("sha={a}"));
        assert_eq!(ta.identity, format!("git {a}"));
        assert_eq!(
            std::fs::read_to_string(ta.dir.join("Kconfig")).expect("read"),
            "config A\n"
        );
        let tb = tree("branch=main");
        assert_eq!(tb.identity, format!("git {b}"));
        assert_eq!(tb.dir, ta.dir, "one clone per URL");
        assert_eq!(tree("tag=v2").identity, format!("git {b}"));
        // An abbreviated id: the branches are fetched whole.
        assert_eq!(
            tree(&format!("sha={}", &a[..10])).identity,
            format!("git {a}")
        );
        let spec = GitSpec::parse(&format!("{url}#sha={}", "0".repeat(40))).expect("spec");
        let err = git_tree(&spec, &src, &mut |_| {}).expect_err("no such commit");
        assert!(err.to_string().contains("no commit 0000"), "{err}");
    }
}
