//! A local kernel tree's source identity: what a build of it records and
//! what booting it checks, so a tree changed since its last build is never
//! booted as if it were built (test binaries resolve trees too, and never
//! build).

use std::path::Path;
use std::process::Command;

use crate::cache::sha256_hex;
use crate::{BuiltFrom, CachedKernel, KernelCache, KernelError};

/// Runs a git command, its stdout on success.
pub(crate) fn git(dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, KernelError> {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    c.args(args);
    let out = c.output().map_err(|e| KernelError::Command {
        command: format!("git {}", args.join(" ")),
        detail: format!("{e} (is git installed? `cargo xtask setup` installs it)"),
    })?;
    if !out.status.success() {
        return Err(KernelError::Command {
            command: format!("git {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// The identity of the canonical tree `dir`: a git work tree by its commit
/// (`git <sha>`) and the hash of `git diff HEAD` when it has uncommitted
/// changes; any other tree by its path and its newest source file's
/// modification time (`tree <path> <ns>`).
pub(crate) fn identity(dir: &Path) -> Result<(String, Option<String>), KernelError> {
    if dir.join(".git").exists() {
        let head = git(Some(dir), &["rev-parse", "HEAD"])?;
        let diff = git(Some(dir), &["diff", "HEAD", "--no-ext-diff", "--binary"])?;
        return Ok((
            format!("git {}", String::from_utf8_lossy(&head).trim()),
            (!diff.is_empty()).then(|| sha256_hex(&diff)),
        ));
    }
    Ok((
        format!("tree {} {}", dir.display(), newest_mtime(dir)),
        None,
    ))
}

/// The newest modification time (ns since the epoch) of the sources below
/// `dir`, build products and hidden files left out.
fn newest_mtime(dir: &Path) -> u128 {
    let mut newest = 0u128;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    let is_source = !matches!(
                        Path::new(&*name).extension().and_then(|x| x.to_str()),
                        Some("o" | "a" | "ko" | "cmd" | "d" | "tmp")
                    ) && !name.starts_with("vmlinux")
                        && name != "bzImage"
                        && name != "System.map";
                    if is_source
                        && let Ok(m) = e.metadata().and_then(|m| m.modified())
                        && let Ok(d) = m.duration_since(std::time::UNIX_EPOCH)
                    {
                        newest = newest.max(d.as_nanos());
                    }
                }
                _ => {}
            }
        }
    }
    newest
}

/// The built kernel of the tree `canon` in the state `now` (its identity
/// and uncommitted changes): the most recently used of its builds with that
/// identity (one per config). A tree changed since its last build is an
/// error that says so, never its older kernel.
pub(crate) fn built_of_tree(
    built: &KernelCache,
    canon: &Path,
    now: &(String, Option<String>),
) -> Result<CachedKernel, KernelError> {
    let spec = canon.display().to_string();
    let builds = crate::builds_of(built, &spec);
    let state = |b: &BuiltFrom| (b.tree.clone(), b.dirty_sha256.clone());
    if let Some(k) = builds
        .iter()
        .find(|k| k.metadata.built.as_ref().is_some_and(|b| state(b) == *now))
    {
        return Ok(k.clone());
    }
    match builds.first().and_then(|k| k.metadata.built.as_ref()) {
        Some(last) => Err(KernelError::StaleTree {
            tree: canon.to_path_buf(),
            built: describe_state(&state(last)),
            now: describe_state(now),
        }),
        None => Err(KernelError::NotBuilt {
            spec,
            cache: built.dir().to_path_buf(),
        }),
    }
}

/// `git 652c2c2…` with ` + uncommitted changes 1a2b…`, for messages.
fn describe_state((id, dirty): &(String, Option<String>)) -> String {
    match dirty {
        Some(d) => format!("{id} + uncommitted changes {}", &d[..d.len().min(12)]),
        None => id.clone(),
    }
}
