//! No dead link in the README or the book: every relative link and image of
//! `README.md` and `docs/src/*.md` names a file that exists, every `#anchor`
//! names a heading of its target (slugs as mdBook and GitHub make them), a
//! chapter links only inside `docs/src/` (what the built book holds), and every
//! chapter is in `SUMMARY.md` and in `book.rs` (so its code is compiled).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// One link of a Markdown file: where it points, and on which line.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// The text of `s` with inline code spans blanked (links in code are not links).
fn blank_code_spans(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_code = false;
    for c in s.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// Lines of `md` outside fenced code blocks, numbered from 1.
fn prose_lines(md: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in md.lines().enumerate() {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// The inline links and images of `md`: `[text](target)`, `![alt](target)`.
fn links(md: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (line, text) in prose_lines(md) {
        let text = blank_code_spans(text);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(Link {
                line,
                target: target.to_string(),
            });
            rest = &after[end..];
        }
    }
    out
}

/// A heading's anchor, as mdBook (`normalize_id`) and GitHub make it: the
/// text without Markdown, lower-cased, spaces to `-`, other punctuation
/// dropped.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](url) -> text
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                text.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of `md`'s headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(md) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let mut id = base.clone();
        let mut n = 0;
        while seen.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        seen.insert(id);
    }
    seen
}

/// `path` with `.` and `..` folded, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with the links of `file` (inside `root`); `confine`: the
/// directory its relative links must stay in.
fn check_file(root: &Path, file: &Path, confine: Option<&Path>) -> Vec<String> {
    let rel = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let md = match std::fs::read_to_string(file) {
        Ok(md) => md,
        Err(e) => return vec![format!("{rel}: {e}")],
    };
    let mut problems = Vec::new();
    for Link { line, target } in links(&md) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let dest = if path.is_empty() {
            file.to_path_buf()
        } else {
            normalize(&file.parent().unwrap_or(root).join(path))
        };
        let at = format!("{rel}:{line}: `{target}`");
        if let Some(dir) = confine
            && !dest.starts_with(dir)
        {
            problems.push(format!(
                "{at} points outside {} (the built book would not have it)",
                dir.strip_prefix(root).unwrap_or(dir).display()
            ));
            continue;
        }
        if !dest.exists() {
            problems.push(format!("{at}: no such file {}", dest.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let Ok(target_md) = std::fs::read_to_string(&dest) else {
                problems.push(format!("{at}: an anchor into a file that is not Markdown"));
                continue;
            };
            if !anchors(&target_md).contains(anchor) {
                problems.push(format!(
                    "{at}: no heading with anchor #{anchor} in {}",
                    dest.display()
                ));
            }
        }
    }
    problems
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("docs/ sits in the repository")
        .to_path_buf()
}

fn chapters(src: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(src)
        .expect("read docs/src")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    out.sort();
    out
}

#[test]
fn no_dead_link_in_the_readme_or_the_book() {
    let root = repo();
    let src = root.join("docs/src");
    let mut problems = check_file(&root, &root.join("README.md"), None);
    for chapter in chapters(&src) {
        problems.extend(check_file(&root, &chapter, Some(&src)));
    }
    assert!(problems.is_empty(), "dead links:\n{}", problems.join("\n"));
}

#[test]
fn every_chapter_is_in_the_summary_and_compiled() {
    let root = repo();
    let src = root.join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).expect("SUMMARY.md");
    let book_rs = std::fs::read_to_string(root.join("docs/book.rs")).expect("docs/book.rs");
    let listed: BTreeSet<String> = links(&summary).into_iter().map(|l| l.target).collect();
    let mut problems = Vec::new();
    for chapter in chapters(&src) {
        let name = chapter
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        if name == "SUMMARY.md" {
            continue;
        }
        if !listed.contains(&name) {
            problems.push(format!("docs/src/{name} is not in docs/src/SUMMARY.md"));
        }
        if !book_rs.contains(&format!("include_str!(\"src/{name}\")")) {
            problems.push(format!(
                "docs/src/{name} is not in docs/book.rs: add `#[doc = include_str!(\"src/{name}\")] pub mod ... {{}}` so its Rust blocks are compiled"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The info strings of `md`'s opening code fences, with their line numbers.
fn fences(md: &str) -> Vec<(usize, String)> {
    let mut open = false;
    let mut out = Vec::new();
    for (i, line) in md.lines().enumerate() {
        let t = line.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            if !open {
                out.push((i + 1, info.trim().to_string()));
            }
            open = !open;
        }
    }
    out
}

/// What is wrong with a code fence's info string: none (rustdoc would compile
/// it as Rust), or Rust that rustdoc is told to ignore.
fn fence_problem(info: &str) -> Option<&'static str> {
    let mut words = info.split(',').map(str::trim);
    match words.next() {
        None | Some("") => Some(
            "a code block without a language (rustdoc compiles it as Rust): mark it ```text, ```sh, ```rust, ...",
        ),
        Some("rust") if words.any(|w| w == "ignore") => Some(
            "an `ignore`d Rust block: make it compile (hidden `# ` lines, `no_run`) or mark it ```text",
        ),
        _ => None,
    }
}

#[test]
fn every_code_block_says_its_language_and_none_is_ignored() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    files.extend(chapters(&root.join("docs/src")));
    let mut problems = Vec::new();
    for file in files {
        let md = std::fs::read_to_string(&file).expect("read a chapter");
        for (line, info) in fences(&md) {
            if let Some(why) = fence_problem(&info) {
                let rel = file
                    .strip_prefix(&root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                problems.push(format!("{rel}:{line}: {why}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(fence_problem("rust,ignore").is_some());
    assert!(fence_problem("").is_some() && fence_problem("rust,no_run").is_none());
}

/// The checker fails on what it must fail on, so its pass means something.
#[test]
fn the_checker_finds_dead_files_and_anchors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let book = dir.join("src");
    std::fs::create_dir_all(&book).expect("mkdir");
    std::fs::write(
        book.join("a.md"),
        "# A chapter\n\n## Set-up: `cargo xtask`\n\n## Set-up: `cargo xtask`\n",
    )
    .expect("write a.md");
    std::fs::write(
        book.join("b.md"),
        "# B\n\
         [fine](a.md#set-up-cargo-xtask) [second](a.md#set-up-cargo-xtask-1) [self](#b)\n\
         [gone](missing.md) [bad anchor](a.md#setup)\n\
         `[in code](nowhere.md)` [web](https://example.org/x)\n\
         [outside](../outside.md)\n\
         ```text\n[in a block](nowhere.md)\n```\n",
    )
    .expect("write b.md");
    std::fs::write(dir.join("outside.md"), "# Out\n").expect("write outside.md");
    let problems = check_file(&dir, &book.join("b.md"), Some(&book));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("missing.md") && problems[0].contains("no such file"));
    assert!(problems[1].contains("no heading with anchor #setup"));
    assert!(problems[2].contains("points outside src"));
    assert!(
        problems.iter().all(|p| p.starts_with("src/b.md:")),
        "{problems:#?}"
    );
}

#[test]
fn slugs_follow_mdbook_and_github() {
    assert_eq!(
        slug("Watching functions on request: `probes`"),
        "watching-functions-on-request-probes"
    );
    assert_eq!(
        slug("Published schedulers (`cargo xtask test --full`)"),
        "published-schedulers-cargo-xtask-test---full"
    );
    assert_eq!(slug("KASLR: randomized boots"), "kaslr-randomized-boots");
    assert_eq!(slug("See [Kernels](kernels.md) now"), "see-kernels-now");
}
