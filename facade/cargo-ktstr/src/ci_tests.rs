//! The generated workflows checked against their schemas: the subset of the
//! GitHub Actions workflow syntax and of GitLab CI's keywords they use,
//! typed with unknown keys refused, plus the rules the schemas state in
//! prose (a step runs a command or uses an action, never both; `needs`
//! names jobs that exist; every `${{ matrix.X }}` is a key of the job's
//! matrix; uploaded artifacts are the ones downloaded).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_yaml::Value;

use super::*;

fn spec() -> CiSpec {
    CiSpec {
        kernels: vec!["7.3".into(), "6.18".into()],
        machines: 3,
        budget: Some("20m".into()),
        gauntlet: true,
        install: "cargo install --locked cargo-ktstr --version 0.1.0".into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workflow {
    name: String,
    on: BTreeMap<String, Value>,
    jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Job {
    runs_on: String,
    #[serde(default)]
    needs: Option<Needs>,
    #[serde(default, rename = "if")]
    if_: Option<String>,
    #[serde(default)]
    strategy: Option<Strategy>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Needs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Strategy {
    #[serde(default)]
    fail_fast: Option<bool>,
    matrix: BTreeMap<String, Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uses: Option<String>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    with: Option<BTreeMap<String, Value>>,
    #[serde(default, rename = "if")]
    if_: Option<String>,
}

/// Every `${{ ... }}` expression of `text`, trimmed; an unclosed one fails.
fn expressions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        let after = &rest[i + 3..];
        let j = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed ${{{{ in {text}"));
        out.push(after[..j].trim().to_string());
        rest = &after[j + 2..];
    }
    out
}

/// Checks a GitHub workflow; returns the parsed form.
fn check_github(text: &str) -> Workflow {
    let w: Workflow = serde_yaml::from_str(text).expect("the workflow fits the schema");
    assert!(!w.name.is_empty());
    assert!(
        w.on.keys()
            .all(|k| ["push", "pull_request"].contains(&k.as_str()))
    );
    let uploaded: BTreeSet<String> = w
        .jobs
        .values()
        .flat_map(|j| &j.steps)
        .filter(|s| {
            s.uses
                .as_deref()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .map(|s| {
            s.with.as_ref().expect("with")["name"]
                .as_str()
                .expect("name")
                .to_string()
        })
        .collect();
    for (id, job) in &w.jobs {
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "job id {id}"
        );
        assert_eq!(job.runs_on, "ubuntu-latest");
        let needs = match &job.needs {
            None => vec![],
            Some(Needs::One(n)) => vec![n.clone()],
            Some(Needs::Many(n)) => n.clone(),
        };
        for n in &needs {
            assert!(w.jobs.contains_key(n) && n != id, "{id} needs {n}");
        }
        assert!(!job.steps.is_empty(), "{id} has steps");
        let matrix: BTreeSet<&String> = job.strategy.iter().flat_map(|s| s.matrix.keys()).collect();
        if let Some(s) = &job.strategy {
            assert!(
                s.matrix.values().all(|v| !v.is_empty()),
                "{id}: empty matrix"
            );
            assert_eq!(
                s.fail_fast,
                Some(false),
                "one shard's failure keeps the others"
            );
        }
        let mut texts: Vec<String> = job.if_.iter().cloned().collect();
        for s in &job.steps {
            assert!(
                s.uses.is_some() != s.run.is_some(),
                "{id}: a step runs a command or uses an action: {s:?}"
            );
            if let Some(u) = &s.uses {
                let (action, version) = u.split_once('@').expect("uses owner/repo@ref");
                assert!(
                    action.split('/').count() == 2 && version.starts_with('v'),
                    "{u}"
                );
                let with = s.with.as_ref();
                if action == "actions/download-artifact" {
                    let w = with.expect("download with");
                    match (w.get("name"), w.get("pattern")) {
                        (Some(n), None) => assert!(uploaded.contains(n.as_str().expect("name"))),
                        (None, Some(p)) => {
                            let prefix = p.as_str().expect("pattern").trim_end_matches('*');
                            assert!(uploaded.iter().any(|u| u.starts_with(prefix)), "{p:?}");
                        }
                        other => panic!("download by name or pattern: {other:?}"),
                    }
                }
                if action == "actions/cache" {
                    let w = with.expect("cache with");
                    assert!(w.contains_key("path") && w.contains_key("key"));
                }
            }
            texts.extend(s.run.iter().cloned());
            texts.extend(s.name.iter().cloned());
            texts.extend(s.if_.iter().cloned());
            for v in s.with.iter().flat_map(|w| w.values()) {
                texts.extend(v.as_str().map(str::to_string));
            }
        }
        for t in &texts {
            for e in expressions(t) {
                if let Some(key) = e.strip_prefix("matrix.") {
                    assert!(matrix.contains(&key.to_string()), "{id}: matrix.{key}");
                } else {
                    assert!(
                        ["github.sha", "always()"].contains(&e.as_str()),
                        "{id}: unexpected expression {e}"
                    );
                }
            }
        }
    }
    w
}

#[test]
fn the_github_workflow_passes_the_schema_check() {
    let text = github(&spec());
    let w = check_github(&text);
    assert_eq!(
        w.jobs.keys().collect::<Vec<_>>(),
        ["archive", "merge", "shard"]
    );
    let m = &w.jobs["shard"].strategy.as_ref().expect("matrix").matrix;
    assert_eq!(m["kernel"].len(), 2);
    assert_eq!(m["shard"].len(), 3);
    assert!(text.contains(
        "cargo ktstr archive -o run.tar.zst --kernel 7.3 --kernel 6.18 --gauntlet --machines 3 \
         --budget 20m"
    ));
    assert!(text.contains("--shard ${{ matrix.shard }}/3"));
    assert!(text.contains("ktstr merge shards/*"));
    // The check finds faults: a step with both, a job that needs a ghost,
    // a matrix key that does not exist.
    for (from, to) in [
        (
            "      - name: Install QEMU\n        run:",
            "      - uses: x/y@v1\n        run:",
        ),
        ("needs: archive", "needs: build"),
        ("--shard ${{ matrix.shard }}", "--shard ${{ matrix.part }}"),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        let caught = std::panic::catch_unwind(|| check_github(&bad)).is_err();
        assert!(caught, "the check misses: {to}");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitlabJob {
    stage: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    parallel: Option<Value>,
    #[serde(default)]
    cache: Option<Value>,
    #[serde(default)]
    variables: Option<BTreeMap<String, String>>,
    script: Vec<String>,
    #[serde(default)]
    artifacts: Option<Value>,
}

#[test]
fn the_gitlab_pipeline_passes_the_schema_check() {
    let text = gitlab(&spec());
    let mut doc: BTreeMap<String, Value> = serde_yaml::from_str(&text).expect("YAML");
    let stages: Vec<String> =
        serde_yaml::from_value(doc.remove("stages").expect("stages")).expect("a list");
    let jobs: BTreeMap<String, GitlabJob> = doc
        .into_iter()
        .map(|(k, v)| {
            let j: GitlabJob = serde_yaml::from_value(v).unwrap_or_else(|e| panic!("{k}: {e}"));
            (k, j)
        })
        .collect();
    assert_eq!(jobs.len(), 3);
    for (id, j) in &jobs {
        assert!(stages.contains(&j.stage), "{id}: stage {}", j.stage);
        assert!(j.image.is_some() && !j.script.is_empty(), "{id}");
        for n in &j.needs {
            assert!(jobs.contains_key(n), "{id} needs {n}");
        }
        if let Some(w) = &j.when {
            assert!(["always", "on_success", "on_failure"].contains(&w.as_str()));
        }
        if let Some(c) = &j.cache {
            assert!(c.get("key").is_some() && c.get("paths").is_some(), "{id}");
        }
    }
    let shard = &jobs["ktstr-shard"];
    let matrix = &shard.parallel.as_ref().expect("parallel")["matrix"][0];
    assert_eq!(matrix["KERNEL"].as_sequence().map(Vec::len), Some(2));
    assert_eq!(matrix["SHARD"].as_sequence().map(Vec::len), Some(3));
    let merge = &jobs["ktstr-merge"];
    let junit = &merge.artifacts.as_ref().expect("artifacts")["reports"]["junit"];
    assert_eq!(junit.as_str(), Some("merged/reports/merged/junit.xml"));
    assert!(jobs["ktstr-archive"].variables.is_some());
}
