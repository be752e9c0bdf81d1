//! Kernel config fragments: ktstr's own (checked in), the user's
//! (`--kconfig FILE`), their merge onto a base config, and the check after
//! `olddefconfig` that every requested option survived, with the reason
//! when one did not.

use std::collections::BTreeMap;
use std::path::Path;

/// ktstr's fragment: what a ktstr guest needs, applied on `tinyconfig`.
pub const KTSTR_FRAGMENT: &str = include_str!("../../kconfig/ktstr.kconfig");

/// The base config target the fragment is applied on by default.
pub const BASE_TARGET: &str = "tinyconfig";

/// The base configs the fragment can be applied on (`kernel build --base`): `tinyconfig`
/// (the default: it builds in about half the steps) or `defconfig` (the architecture's
/// default config, with its drivers).
pub const BASE_TARGETS: [&str; 2] = ["tinyconfig", "defconfig"];

/// One requested option: `CONFIG_NAME=value`, or `# CONFIG_NAME is not set`
/// (value `n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The symbol without `CONFIG_`.
    pub name: String,
    /// `y`, `m`, `n`, a number or a quoted string.
    pub value: String,
    /// Where it was asked for (`ktstr.kconfig:12`, `my.kconfig:3`).
    pub origin: String,
}

/// A fragment line that is neither an option, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}: `{line}` is not a kconfig line: write CONFIG_NAME=value or \
     `# CONFIG_NAME is not set`"
)]
pub struct FragmentError {
    /// `file:line`.
    pub origin: String,
    /// The line.
    pub line: String,
}

/// Parses a fragment named `file` (for messages).
pub fn parse_fragment(file: &str, text: &str) -> Result<Vec<Want>, FragmentError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let origin = format!("{file}:{}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim();
            if let Some(name) = rest
                .strip_prefix("CONFIG_")
                .and_then(|r| r.strip_suffix(" is not set"))
                .filter(|n| is_symbol(n))
            {
                out.push(Want {
                    name: name.to_string(),
                    value: "n".into(),
                    origin,
                });
            }
            continue;
        }
        let parsed = line
            .strip_prefix("CONFIG_")
            .and_then(|r| r.split_once('='))
            .filter(|(n, v)| is_symbol(n) && !v.is_empty());
        match parsed {
            Some((name, value)) => out.push(Want {
                name: name.to_string(),
                value: value.to_string(),
                origin,
            }),
            None => {
                return Err(FragmentError {
                    origin,
                    line: line.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The values of a `.config`: `NAME -> value` (`n` for `is not set`).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("# CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            out.insert(name.to_string(), "n".to_string());
        } else if let Some((name, value)) =
            line.strip_prefix("CONFIG_").and_then(|r| r.split_once('='))
        {
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

/// The text appended to the base config: the fragments in order (a later
/// assignment overrides an earlier one when Kconfig reads the file).
pub fn merged(base: &str, fragments: &[(&str, &str)]) -> String {
    let mut s = base.to_string();
    if !s.ends_with('\n') && !s.is_empty() {
        s.push('\n');
    }
    for (name, text) in fragments {
        s.push_str(&format!("# ---- ktstr: fragment {name}\n"));
        s.push_str(text);
        if !text.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// A requested option that `olddefconfig` did not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// What was asked for.
    pub want: Want,
    /// What the final config has (`n` when unset or absent).
    pub got: String,
    /// Why, as far as the Kconfig files tell.
    pub why: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CONFIG_{}={} ({}) did not survive olddefconfig (the config has {}): {}",
            self.want.name,
            self.want.value,
            self.want.origin,
            if self.got == "n" {
                "it unset".to_string()
            } else {
                self.got.clone()
            },
            self.why
        )
    }
}

/// The requested options the final `config` does not have; the last
/// request of a symbol is the one that counts. `why` explains one.
pub fn check(
    wants: &[Want],
    config: &BTreeMap<String, String>,
    mut why: impl FnMut(&str) -> String,
) -> Vec<Lost> {
    let mut last: BTreeMap<&str, &Want> = BTreeMap::new();
    for w in wants {
        last.insert(&w.name, w);
    }
    let mut lost = Vec::new();
    for w in wants {
        if !std::ptr::eq(last[w.name.as_str()], w) {
            continue;
        }
        let got = config.get(&w.name).map_or("n", String::as_str);
        if got != w.value {
            lost.push(Lost {
                want: w.clone(),
                got: got.to_string(),
                why: why(&w.name),
            });
        }
    }
    lost
}

/// Where a symbol is defined in a source tree's Kconfig files, and the
/// `depends on` lines of its entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The Kconfig files (relative to the tree) defining it.
    pub files: Vec<String>,
    /// The `depends on` expressions of its entries.
    pub depends: Vec<String>,
    /// Whether an entry has a prompt (else only a `select` or a default
    /// sets it).
    pub prompt: bool,
    /// The symbols that `select` it.
    pub selected_by: Vec<String>,
}

/// Finds `name`'s definitions in the Kconfig files below `tree`.
pub fn find_definition(tree: &Path, name: &str) -> Definition {
    let mut def = Definition::default();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let fname = e.file_name();
            let fname = fname.to_string_lossy();
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let skip =
                        fname.starts_with('.') || fname == "Documentation" || fname == "tools";
                    if !skip {
                        stack.push(p);
                    }
                }
                Ok(t) if t.is_file() && fname.starts_with("Kconfig") => {
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        if let Some(e) = entry(&text, name) {
                            let rel = p.strip_prefix(tree).unwrap_or(&p);
                            def.files.push(rel.display().to_string());
                            def.depends.extend(e.depends);
                            def.prompt |= e.prompt;
                        }
                        def.selected_by.extend(selectors(&text, name));
                    }
                }
                _ => {}
            }
        }
    }
    def.files.sort();
    def.selected_by.sort();
    def.selected_by.dedup();
    def
}

/// The symbols whose entries in one Kconfig text `select NAME`.
fn selectors(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("config" | "menuconfig"), Some(sym)) => current = Some(sym),
            (Some("select"), Some(sym)) if sym == name => {
                if let Some(c) = current {
                    out.push(c.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// One symbol's entry in a Kconfig text.
struct Entry {
    depends: Vec<String>,
    prompt: bool,
}

/// The `depends on` expressions of `name`'s entry in one Kconfig text, or
/// `None` when it is not defined there.
pub fn entry_depends(text: &str, name: &str) -> Option<Vec<String>> {
    entry(text, name).map(|e| e.depends)
}

fn entry(text: &str, name: &str) -> Option<Entry> {
    let mut found = false;
    let mut prompt = false;
    let mut deps = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        let head = t.split_whitespace().next().unwrap_or("");
        let starts_entry = matches!(
            head,
            "config"
                | "menuconfig"
                | "choice"
                | "endchoice"
                | "menu"
                | "endmenu"
                | "if"
                | "endif"
                | "source"
                | "comment"
        );
        if head == "help" || head == "---help---" {
            // Help text follows: its words are not keywords.
            inside = false;
            continue;
        }
        if starts_entry {
            inside = matches!(head, "config" | "menuconfig")
                && t.split_whitespace().nth(1) == Some(name);
            found |= inside;
            continue;
        }
        if inside && let Some(expr) = t.strip_prefix("depends on") {
            deps.push(expr.trim().to_string());
        }
        if inside
            && (t.starts_with("prompt")
                || ["bool", "tristate", "int", "hex", "string"]
                    .iter()
                    .any(|k| {
                        t.strip_prefix(k)
                            .is_some_and(|r| r.trim_start().starts_with('"'))
                    }))
        {
            prompt = true;
        }
    }
    found.then_some(Entry {
        depends: deps,
        prompt,
    })
}

/// Why `name` did not survive, in words: not an option of this kernel or
/// architecture, or the dependencies that are not met in `config`.
pub fn explain(def: &Definition, name: &str, config: &BTreeMap<String, String>) -> String {
    if def.files.is_empty() {
        return format!(
            "this kernel's Kconfig has no option {name} (misspelt, renamed or removed?)"
        );
    }
    let ours = |f: &&String| !f.starts_with("arch/") || f.starts_with("arch/x86/");
    if !def.files.iter().any(|f| ours(&f)) {
        return format!(
            "{name} is defined only in {}: an option of another architecture (ktstr builds x86_64)",
            def.files.join(", ")
        );
    }
    if !def.prompt && !def.selected_by.is_empty() {
        let by: Vec<String> = def
            .selected_by
            .iter()
            .take(6)
            .map(|s| format!("{s}={}", config.get(s).map_or("n", String::as_str)))
            .collect();
        return format!(
            "{name} has no prompt: only a `select` sets it, by {}{}",
            by.join(", "),
            if def.selected_by.len() > 6 {
                ", ..."
            } else {
                ""
            }
        );
    }
    if def.depends.is_empty() {
        return format!(
            "{name} (in {}) has no `depends on` line: a `choice` sibling, a `select` or an \
             enclosing `if`/`menu` decided; see `make menuconfig`, search {name}",
            def.files.join(", ")
        );
    }
    let unmet: Vec<String> = def
        .depends
        .iter()
        .map(|expr| {
            let values: Vec<String> = symbols(expr)
                .into_iter()
                .map(|s| format!("{s}={}", config.get(&s).map_or("n", String::as_str)))
                .collect();
            format!("`depends on {expr}` ({})", values.join(", "))
        })
        .collect();
    format!("it {}", unmet.join("; "))
}

/// The symbols an expression names (not `y`/`m`/`n`, numbers or strings).
fn symbols(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_str = !in_str;
            cur.clear();
            continue;
        }
        if !in_str && (c.is_ascii_alphanumeric() || c == '_') {
            cur.push(c);
            continue;
        }
        if !cur.is_empty()
            && is_symbol(&cur)
            && !cur.bytes().all(|b| b.is_ascii_digit())
            && !out.contains(&cur)
        {
            out.push(cur.clone());
        }
        cur.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktstr_fragment_parses_and_has_what_the_guest_needs() {
        let wants = parse_fragment("ktstr.kconfig", KTSTR_FRAGMENT).expect("parses");
        let has = |n: &str, v: &str| wants.iter().any(|w| w.name == n && w.value == v);
        for n in [
            "SCHED_CLASS_EXT",
            "DEBUG_INFO_BTF",
            "BPF_JIT",
            "KPROBES",
            "FPROBE",
            "SCHEDSTATS",
            "CPUSETS",
            "NUMA",
            "ACPI_NUMA",
            "PVH",
            "SERIAL_8250_CONSOLE",
            "KVM_GUEST",
            "BLK_DEV_INITRD",
            "DEVMEM",
        ] {
            assert!(has(n, "y"), "{n}");
        }
        assert!(has("MODULES", "n"));
    }

    #[test]
    fn fragment_lines_and_errors() {
        let w = parse_fragment(
            "u.kconfig",
            "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=64\n",
        )
        .expect("parses");
        let pairs: Vec<(&str, &str)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("A", "y"), ("B", "n"), ("C", "\"x y\""), ("D", "64")]
        );
        assert_eq!(w[1].origin, "u.kconfig:4");
        let err = parse_fragment("u.kconfig", "CONFIG_A=y\nSCHED_EXT=y\n").expect_err("bad");
        assert_eq!(err.origin, "u.kconfig:2");
        assert!(err.to_string().contains("`SCHED_EXT=y`"), "{err}");
        assert!(parse_fragment("u", "CONFIG_lower=y").is_err());
        assert!(parse_fragment("u", "CONFIG_A=").is_err());
    }

    #[test]
    fn the_check_names_lost_options_and_the_last_request_counts() {
        let wants = parse_fragment(
            "k",
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_N=64\nCONFIG_B=n\n",
        )
        .expect("parses");
        let config = parse_config("CONFIG_A=y\nCONFIG_C=y\n# CONFIG_B is not set\nCONFIG_N=32\n");
        let lost = check(&wants, &config, |n| format!("because {n}"));
        let names: Vec<(&str, &str)> = lost
            .iter()
            .map(|l| (l.want.name.as_str(), l.got.as_str()))
            .collect();
        assert_eq!(names, [("C", "y"), ("N", "32")]);
        assert!(
            lost[1]
                .to_string()
                .starts_with("CONFIG_N=64 (k:4) did not survive olddefconfig (the config has 32)"),
            "{}",
            lost[1]
        );
    }

    #[test]
    fn merge_appends_fragments_in_order() {
        let m = merged(
            "CONFIG_A=n",
            &[("ktstr", "CONFIG_A=y"), ("user", "CONFIG_B=y\n")],
        );
        assert_eq!(
            m,
            "CONFIG_A=n\n# ---- ktstr: fragment ktstr\nCONFIG_A=y\n# ---- ktstr: fragment user\nCONFIG_B=y\n"
        );
    }

    #[test]
    fn kconfig_entries_and_explanations() {
        let text = "menu \"x\"\nconfig FOO\n\tbool \"foo\"\n\tdepends on BAR && !BAZ\n\tdepends on QUX=\"1\"\n\thelp\n\t  depends on NOT_THIS\nconfig OTHER\n\tdepends on ZZZ\nendmenu\n";
        // A `depends on` in the help text is not one.
        let deps = entry_depends(text, "FOO").expect("defined");
        assert_eq!(deps, ["BAR && !BAZ", "QUX=\"1\""]);
        assert!(entry_depends(text, "NOPE").is_none());
        let config = parse_config("CONFIG_BAR=y\n");
        let def = Definition {
            files: vec!["init/Kconfig".into()],
            depends: vec!["BAR && !BAZ && X86_64".into()],
            prompt: true,
            selected_by: vec![],
        };
        assert_eq!(
            explain(&def, "FOO", &config),
            "it `depends on BAR && !BAZ && X86_64` (BAR=y, BAZ=n, X86_64=n)"
        );
        let arm = Definition {
            files: vec!["arch/arm64/Kconfig".into()],
            ..Definition::default()
        };
        assert!(
            explain(&arm, "ARM64_SVE", &config).contains("another architecture"),
            "{}",
            explain(&arm, "ARM64_SVE", &config)
        );
        assert!(explain(&Definition::default(), "NOPE", &config).contains("has no option NOPE"));
        let selected = Definition {
            files: vec!["kernel/bpf/Kconfig".into()],
            selected_by: vec!["BPF_SYSCALL".into()],
            ..Definition::default()
        };
        assert_eq!(
            explain(&selected, "BPF", &config),
            "BPF has no prompt: only a `select` sets it, by BPF_SYSCALL=n"
        );
    }

    #[test]
    fn definitions_are_found_in_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("arch/arm64")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("kernel")).expect("mkdir");
        std::fs::write(
            dir.path().join("arch/arm64/Kconfig"),
            "config ARM64_SVE\n\tbool \"sve\"\n\tdepends on ARM64\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("kernel/Kconfig.preempt"),
            "config SCHED_CLASS_EXT\n\tbool \"ext\"\n\tdepends on BPF_SYSCALL\n\tselect BPF_THING\n",
        )
        .expect("write");
        let def = find_definition(dir.path(), "ARM64_SVE");
        assert_eq!(def.files, ["arch/arm64/Kconfig"]);
        assert_eq!(def.depends, ["ARM64"]);
        let def = find_definition(dir.path(), "SCHED_CLASS_EXT");
        assert_eq!(def.files, ["kernel/Kconfig.preempt"]);
        assert!(def.prompt);
        assert_eq!(
            find_definition(dir.path(), "BPF_THING").selected_by,
            ["SCHED_CLASS_EXT"]
        );
        assert!(find_definition(dir.path(), "NOPE").files.is_empty());
    }
}
