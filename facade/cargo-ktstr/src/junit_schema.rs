//! A schema check of JUnit XML (tests only): the rules of the JUnit XML that
//! CI systems read (the Ant task's format, as Jenkins, GitLab and most CI
//! parsers take it), written down as a table of elements, their attributes
//! with types, and their children in order, plus the counts a suite's
//! attributes promise. A document passes when [`violations`] is empty.
//!
//! The rules, per element (`?` optional, `*` any number, `|` one of):
//! - `testsuites` (root): attributes `name`, `tests`, `failures`, `errors`,
//!   `skipped`, `disabled`, `time`, all optional; children `testsuite*`.
//! - `testsuite` (root or child): `name`, `tests`, `failures`, `errors`,
//!   `time`, `timestamp`, `hostname` required; `skipped`, `disabled`, `id`,
//!   `package`, `file` optional; children `properties?`, `testcase*`,
//!   `system-out?`, `system-err?`, in that order.
//! - `properties`: `property*`; `property`: `name` and `value` required.
//! - `testcase`: `name`, `classname`, `time` required; `assertions`, `file`,
//!   `line` optional; children `(skipped | error | failure)?`,
//!   `system-out?`, `system-err?`.
//! - `failure`, `error`: `type` required, `message` optional, text.
//! - `skipped`: `message` optional, text.
//! - `system-out`, `system-err`: text only.
//!
//! Types: counts are non-negative integers (digits only); `time` a
//! non-negative decimal (digits, an optional fraction, no exponent: XML
//! Schema's `decimal`); `timestamp` an ISO 8601 date and time without a
//! zone (`2026-11-27T12:00:00`); names and `hostname` tokens (non-empty, no
//! line breaks or tabs, no leading, trailing or doubled spaces). Unknown
//! elements and attributes, and text where none belongs, are violations.
//! A suite's `tests`, `failures`, `errors` and `skipped` equal the count of
//! its test cases and of their outcomes, and the root `testsuites`' counts
//! the sums over its suites.

use roxmltree::{Document, Node};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    /// Any text.
    Text,
    /// XML Schema's `token`, non-empty.
    Token,
    /// A non-negative integer.
    Count,
    /// A non-negative decimal number of seconds.
    Seconds,
    /// ISO 8601 date and time without a zone.
    DateTime,
}

/// One attribute: name, type, required.
type Attr = (&'static str, Ty, bool);

/// A run of consecutive children named one of `names`, `min..=max` times.
struct Particle {
    names: &'static [&'static str],
    min: usize,
    max: usize,
}

const MANY: usize = usize::MAX;

const fn p(names: &'static [&'static str], min: usize, max: usize) -> Particle {
    Particle { names, min, max }
}

struct Rule {
    name: &'static str,
    attrs: &'static [Attr],
    children: &'static [Particle],
    text: bool,
}

const COUNTS: [(&str, Ty, bool); 5] = [
    ("tests", Ty::Count, false),
    ("failures", Ty::Count, false),
    ("errors", Ty::Count, false),
    ("skipped", Ty::Count, false),
    ("disabled", Ty::Count, false),
];

const RULES: &[Rule] = &[
    Rule {
        name: "testsuites",
        attrs: &[
            ("name", Ty::Text, false),
            COUNTS[0],
            COUNTS[1],
            COUNTS[2],
            COUNTS[3],
            COUNTS[4],
            ("time", Ty::Seconds, false),
        ],
        children: &[p(&["testsuite"], 0, MANY)],
        text: false,
    },
    Rule {
        name: "testsuite",
        attrs: &[
            ("name", Ty::Token, true),
            ("tests", Ty::Count, true),
            ("failures", Ty::Count, true),
            ("errors", Ty::Count, true),
            ("time", Ty::Seconds, true),
            ("timestamp", Ty::DateTime, true),
            ("hostname", Ty::Token, true),
            COUNTS[3],
            COUNTS[4],
            ("id", Ty::Text, false),
            ("package", Ty::Token, false),
            ("file", Ty::Text, false),
        ],
        children: &[
            p(&["properties"], 0, 1),
            p(&["testcase"], 0, MANY),
            p(&["system-out"], 0, 1),
            p(&["system-err"], 0, 1),
        ],
        text: false,
    },
    Rule {
        name: "properties",
        attrs: &[],
        children: &[p(&["property"], 0, MANY)],
        text: false,
    },
    Rule {
        name: "property",
        attrs: &[("name", Ty::Token, true), ("value", Ty::Text, true)],
        children: &[],
        text: false,
    },
    Rule {
        name: "testcase",
        attrs: &[
            ("name", Ty::Token, true),
            ("classname", Ty::Token, true),
            ("time", Ty::Seconds, true),
            ("assertions", Ty::Count, false),
            ("file", Ty::Text, false),
            ("line", Ty::Count, false),
        ],
        children: &[
            p(&["skipped", "error", "failure"], 0, 1),
            p(&["system-out"], 0, 1),
            p(&["system-err"], 0, 1),
        ],
        text: false,
    },
    Rule {
        name: "failure",
        attrs: &[("message", Ty::Text, false), ("type", Ty::Token, true)],
        children: &[],
        text: true,
    },
    Rule {
        name: "error",
        attrs: &[("message", Ty::Text, false), ("type", Ty::Token, true)],
        children: &[],
        text: true,
    },
    Rule {
        name: "skipped",
        attrs: &[("message", Ty::Text, false)],
        children: &[],
        text: true,
    },
    Rule {
        name: "system-out",
        attrs: &[],
        children: &[],
        text: true,
    },
    Rule {
        name: "system-err",
        attrs: &[],
        children: &[],
        text: true,
    },
];

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn type_ok(ty: Ty, v: &str) -> bool {
    match ty {
        Ty::Text => true,
        Ty::Token => {
            !v.is_empty()
                && !v.contains(['\n', '\r', '\t'])
                && !v.starts_with(' ')
                && !v.ends_with(' ')
                && !v.contains("  ")
        }
        Ty::Count => digits(v),
        Ty::Seconds => match v.split_once('.') {
            Some((i, f)) => (i.is_empty() || digits(i)) && digits(f),
            None => digits(v),
        },
        Ty::DateTime => {
            // YYYY-MM-DDTHH:MM:SS with an optional fraction, no zone.
            let (main, frac) = v.split_once('.').unwrap_or((v, "0"));
            let b = main.as_bytes();
            let num = |r: std::ops::Range<usize>, lo: u32, hi: u32| {
                main.get(r)
                    .filter(|s| digits(s))
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|n| (lo..=hi).contains(&n))
            };
            b.len() == 19
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && num(0..4, 1, 9999)
                && num(5..7, 1, 12)
                && num(8..10, 1, 31)
                && num(11..13, 0, 23)
                && num(14..16, 0, 59)
                && num(17..19, 0, 59)
                && digits(frac)
        }
    }
}

fn path(n: Node<'_, '_>) -> String {
    let mut names: Vec<String> = n
        .ancestors()
        .filter(Node::is_element)
        .map(|a| match a.attribute("name") {
            Some(name) => format!("{}[{name}]", a.tag_name().name()),
            None => a.tag_name().name().to_string(),
        })
        .collect();
    names.reverse();
    names.join("/")
}

fn count_attr(n: Node<'_, '_>, attr: &str) -> Option<usize> {
    n.attribute(attr).and_then(|v| v.parse().ok())
}

fn check_counts(n: Node<'_, '_>, cases: &[Node<'_, '_>], out: &mut Vec<String>) {
    let outcome = |tag: &str| {
        cases
            .iter()
            .filter(|c| c.children().any(|k| k.tag_name().name() == tag))
            .count()
    };
    for (attr, n_found) in [
        ("tests", cases.len()),
        ("failures", outcome("failure")),
        ("errors", outcome("error")),
        ("skipped", outcome("skipped")),
    ] {
        if let Some(said) = count_attr(n, attr)
            && said != n_found
        {
            out.push(format!(
                "{}: {attr}=\"{said}\" but it holds {n_found}",
                path(n)
            ));
        }
    }
}

fn check_element(n: Node<'_, '_>, out: &mut Vec<String>) {
    let name = n.tag_name().name();
    let Some(rule) = RULES.iter().find(|r| r.name == name) else {
        out.push(format!("{}: unknown element <{name}>", path(n)));
        return;
    };
    if n.tag_name().namespace().is_some() {
        out.push(format!("{}: JUnit elements have no namespace", path(n)));
    }
    for a in n.attributes() {
        match rule.attrs.iter().find(|(k, _, _)| *k == a.name()) {
            None => out.push(format!("{}: unknown attribute {}", path(n), a.name())),
            Some((k, ty, _)) if !type_ok(*ty, a.value()) => out.push(format!(
                "{}: attribute {k}=\"{}\" is not a {ty:?}",
                path(n),
                a.value()
            )),
            Some(_) => {}
        }
    }
    for (k, _, required) in rule.attrs {
        if *required && n.attribute(*k).is_none() {
            out.push(format!("{}: attribute {k} is required", path(n)));
        }
    }
    if !rule.text
        && n.children()
            .any(|c| c.is_text() && !c.text().unwrap_or("").trim().is_empty())
    {
        out.push(format!("{}: text is not allowed here", path(n)));
    }
    let kids: Vec<Node<'_, '_>> = n.children().filter(Node::is_element).collect();
    let mut i = 0;
    for part in rule.children {
        let run = kids[i..]
            .iter()
            .take_while(|k| part.names.contains(&k.tag_name().name()))
            .count();
        if run < part.min || run > part.max {
            out.push(format!(
                "{}: {run} of <{}> where {}..{} belong",
                path(n),
                part.names.join("|"),
                part.min,
                if part.max == MANY {
                    "n".to_string()
                } else {
                    part.max.to_string()
                },
            ));
        }
        i += run;
    }
    if let Some(k) = kids.get(i) {
        out.push(format!(
            "{}: <{}> is not allowed here (children of <{name}> are, in order: {})",
            path(*k),
            k.tag_name().name(),
            rule.children
                .iter()
                .map(|p| p.names.join("|"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for k in &kids {
        check_element(*k, out);
    }
    match name {
        "testsuite" => {
            let cases: Vec<Node<'_, '_>> = kids
                .iter()
                .copied()
                .filter(|k| k.tag_name().name() == "testcase")
                .collect();
            check_counts(n, &cases, out);
        }
        "testsuites" => {
            let cases: Vec<Node<'_, '_>> = kids
                .iter()
                .flat_map(|s| s.children())
                .filter(|k| k.tag_name().name() == "testcase")
                .collect();
            check_counts(n, &cases, out);
        }
        _ => {}
    }
}

/// What breaks the JUnit rules in `xml` (empty: it validates).
pub fn violations(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>") {
        out.push("the document does not start with an XML 1.0 UTF-8 declaration".into());
    }
    let doc = match Document::parse(xml) {
        Ok(d) => d,
        Err(e) => {
            out.push(format!("not well-formed XML: {e}"));
            return out;
        }
    };
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        out.push(format!(
            "the root is <{}>, not <testsuites> or <testsuite>",
            root.tag_name().name()
        ));
        return out;
    }
    check_element(root, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" failures="1" errors="0" skipped="0" time="1.5">
  <testsuite name="s" tests="2" failures="1" errors="0" skipped="0" time="1.5" timestamp="2026-11-27T12:00:00" hostname="h">
    <properties><property name="k" value=""/></properties>
    <testcase classname="c" name="a" time="0.5"/>
    <testcase classname="c" name="b" time="1">
      <failure message="m" type="t">text</failure>
      <system-out>out</system-out>
    </testcase>
  </testsuite>
</testsuites>
"#;

    #[test]
    fn a_document_by_the_rules_validates() {
        assert_eq!(violations(GOOD), Vec::<String>::new());
    }

    /// The twin of the check: each breakage of one rule is caught, and
    /// named.
    #[test]
    fn each_broken_rule_is_caught_and_named() {
        let cases = [
            // (edit to GOOD, a piece of the expected message)
            (
                ("time=\"0.5\"", "time=\"-0.5\""),
                "time=\"-0.5\" is not a Seconds",
            ),
            (("time=\"0.5\"", "time=\"1e3\""), "is not a Seconds"),
            (
                ("time=\"0.5\"", ""),
                "testcase[a]: attribute time is required",
            ),
            (
                ("classname=\"c\" name=\"a\"", "name=\"a\""),
                "attribute classname is required",
            ),
            (("hostname=\"h\"", ""), "attribute hostname is required"),
            (
                ("2026-11-27T12:00:00", "2026-11-27 12:00:00"),
                "is not a DateTime",
            ),
            (
                ("2026-11-27T12:00:00", "2026-11-27T12:00:00Z"),
                "is not a DateTime",
            ),
            (
                ("2026-11-27T12:00:00", "2026-13-27T12:00:00"),
                "is not a DateTime",
            ),
            (
                (
                    "tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"1.5\" timestamp",
                    "tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"1.5\" timestamp",
                ),
                "tests=\"3\" but it holds 2",
            ),
            (
                (
                    "<testsuites tests=\"2\" failures=\"1\"",
                    "<testsuites tests=\"2\" failures=\"0\"",
                ),
                "testsuites: failures=\"0\" but it holds 1",
            ),
            (
                (
                    "errors=\"0\" skipped=\"0\" time=\"1.5\" timestamp",
                    "errors=\"x\" skipped=\"0\" time=\"1.5\" timestamp",
                ),
                "errors=\"x\" is not a Count",
            ),
            (("name=\"a\"", "name=\"\""), "name=\"\" is not a Token"),
            (("type=\"t\"", ""), "failure: attribute type is required"),
            (
                (
                    "<system-out>out</system-out>",
                    "<system-out>out</system-out><skipped/>",
                ),
                "<skipped> is not allowed here",
            ),
            (
                (
                    "<failure message=\"m\" type=\"t\">text</failure>",
                    "<failure type=\"t\"/><error type=\"t\"/>",
                ),
                "2 of <skipped|error|failure> where 0..1 belong",
            ),
            (
                (
                    "<system-out>out</system-out>",
                    "<system-out>out</system-out><system-out/>",
                ),
                "2 of <system-out> where 0..1 belong",
            ),
            (
                (
                    "<system-out>out</system-out>",
                    "<system-out><b>x</b></system-out>",
                ),
                "<b> is not allowed here",
            ),
            (
                (
                    "<testcase classname=\"c\" name=\"a\" time=\"0.5\"/>",
                    "<testcase classname=\"c\" name=\"a\" time=\"0.5\">loose</testcase>",
                ),
                "text is not allowed here",
            ),
            (
                (
                    "<testcase classname=\"c\" name=\"a\"",
                    "<testcase owner=\"x\" classname=\"c\" name=\"a\"",
                ),
                "unknown attribute owner",
            ),
            (
                ("<properties>", "<case/><properties>"),
                "<case> is not allowed here",
            ),
            (
                (
                    "<failure message=\"m\" type=\"t\">text</failure>",
                    "<failure message=\"a<b\" type=\"t\">text</failure>",
                ),
                "not well-formed XML",
            ),
            (
                (
                    "<failure message=\"m\" type=\"t\">text</failure>",
                    "<failure message=\"m\" type=\"t\">te\u{1}xt</failure>",
                ),
                "not well-formed XML",
            ),
            (
                ("encoding=\"UTF-8\"", "encoding=\"latin1\""),
                "XML 1.0 UTF-8 declaration",
            ),
        ];
        for ((from, to), want) in cases {
            assert!(GOOD.contains(from), "the case's edit applies: {from}");
            let broken = GOOD.replacen(from, to, 1);
            let v = violations(&broken);
            assert!(
                v.iter().any(|m| m.contains(want)),
                "{from} -> {to}: expected a violation with {want:?}, got {v:#?}"
            );
        }
        let v = violations("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<results/>");
        assert!(v[0].contains("the root is <results>"), "{v:?}");
    }
}
