//! Procedural macros of ktstr: `#[ktstr_test]` registers a test that boots a VM.
//!
//! Re-exported by the `ktstr` facade; users never depend on this crate directly.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token, parse_macro_input};

/// What `#[ktstr_test(...)]` says. The keys given become `TestConfig` fields; every other
/// field comes from `TestConfig::DEFAULT`, the one place the defaults are written (the
/// shape's in `ktstr_topology::DeclaredShape::DEFAULT`, which validation here also uses).
struct Config {
    /// The declared shape, defaults filled in (for validation and the gauntlet).
    shape: ktstr_topology::DeclaredShape,
    duration_s: Option<u32>,
    watchdog_timeout_s: Option<u32>,
    harness_fixture: bool,
    constraints: ktstr_topology::Constraints,
    gauntlet: bool,
    /// `TestConfig` field name to its value's tokens, for the keys given.
    fields: std::collections::BTreeMap<&'static str, proc_macro2::TokenStream>,
}

impl Config {
    /// `expect_err` on, with `field` (`expect_err_matching`: a kind;
    /// `expect_err_text`: a substring) set to `m`.
    fn expect_failure(&mut self, field: &'static str, m: String) {
        self.fields.insert("expect_err", quote! { true });
        self.fields
            .insert(field, quote! { ::core::option::Option::Some(#m) });
    }
}

fn int<T: std::str::FromStr>(nv: &MetaNameValue) -> syn::Result<T>
where
    T::Err: std::fmt::Display,
{
    match &nv.value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse(),
        other => Err(syn::Error::new_spanned(
            other,
            "expected an integer literal",
        )),
    }
}

/// Most functions one test may probe (`ktstr_probe::MAX_FUNCTIONS`).
const MAX_PROBES: usize = 16;

/// `probes = ["fn", ..]`: non-empty function names, at most [`MAX_PROBES`].
fn probes(nv: &MetaNameValue) -> syn::Result<Vec<String>> {
    let usage = "probes takes [\"function\", ..]: kernel functions or the scheduler's BPF \
                 callbacks (`ktstr probe list PATTERN` lists the kernel's)";
    let Expr::Array(a) = &nv.value else {
        return Err(syn::Error::new_spanned(&nv.value, usage));
    };
    let mut out = Vec::new();
    for e in &a.elems {
        match e {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) if !s.value().trim().is_empty() && !s.value().contains(char::is_whitespace) => {
                out.push(s.value())
            }
            other => return Err(syn::Error::new_spanned(other, usage)),
        }
    }
    if out.len() > MAX_PROBES {
        return Err(syn::Error::new_spanned(
            &nv.value,
            format!(
                "probes names {} functions; at most {MAX_PROBES} can be probed in one test",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn parse_config(args: Punctuated<MetaNameValue, Token![,]>) -> syn::Result<Config> {
    let mut c = Config {
        shape: ktstr_topology::DeclaredShape::DEFAULT,
        duration_s: None,
        watchdog_timeout_s: None,
        harness_fixture: false,
        constraints: ktstr_topology::Constraints::DEFAULT,
        gauntlet: true,
        fields: std::collections::BTreeMap::new(),
    };
    let boolean = |nv: &MetaNameValue, key: &str| -> syn::Result<bool> {
        match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) => Ok(b.value),
            other => Err(syn::Error::new_spanned(
                other,
                format!("{key} takes true or false"),
            )),
        }
    };
    for nv in &args {
        let key = nv
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "numa_nodes" | "llcs" | "cores" | "threads" => {
                let v: u32 = int(nv)?;
                let (field, slot) = match key.as_str() {
                    "numa_nodes" => ("numa_nodes", &mut c.shape.numa_nodes),
                    "llcs" => ("llcs", &mut c.shape.llcs),
                    "cores" => ("cores", &mut c.shape.cores),
                    _ => ("threads", &mut c.shape.threads),
                };
                *slot = v;
                c.fields.insert(field, quote! { #v });
            }
            "memory_mib" => {
                c.shape.memory_mib = int(nv)?;
                let v = c.shape.memory_mib;
                c.fields.insert("memory_mib", quote! { #v });
            }
            "duration_s" => {
                let v: u32 = int(nv)?;
                c.duration_s = Some(v);
                c.fields.insert("duration_s", quote! { #v });
            }
            "watchdog_timeout_s" => c.watchdog_timeout_s = Some(int(nv)?),
            "expect_err" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("expect_err", quote! { #v });
                    c.fields.remove("expect_err_matching");
                    if !v {
                        c.fields.remove("expect_err_text");
                    }
                }
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if !s.value().is_empty() => c.expect_failure("expect_err_matching", s.value()),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expect_err takes true, false, or the kind the failure must have (a \
                         typed error kind such as \"StartupDied\", or a failed check's name \
                         such as \"fairness\"); for a substring of the failure text use \
                         expect_err_text = \"...\"",
                    ));
                }
            },
            "expect_err_text" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if !s.value().is_empty() => c.expect_failure("expect_err_text", s.value()),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expect_err_text takes a non-empty string the failure's text must hold",
                    ));
                }
            },
            "scheduler" => {
                let e = &nv.value;
                c.fields
                    .insert("scheduler", quote! { ::core::option::Option::Some(#e) });
            }
            "staged_schedulers" => match &nv.value {
                Expr::Array(a) => {
                    let e = a.elems.iter();
                    c.fields.insert("staged_schedulers", quote! { &[#(#e),*] });
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "staged_schedulers takes [A, B, ..]",
                    ));
                }
            },
            "probes" => {
                let p = probes(nv)?;
                c.fields.insert("probes", quote! { &[#(#p),*] });
            }
            "cleanup_budget_ms" => {
                let v: u64 = int(nv)?;
                c.fields.insert("cleanup_budget_ms", quote! { #v });
            }
            "min_cpus" => c.constraints.min_cpus = int(nv)?,
            "max_cpus" => c.constraints.max_cpus = int(nv)?,
            "min_numa_nodes" => c.constraints.min_numa_nodes = int(nv)?,
            "min_llcs" => c.constraints.min_llcs = int(nv)?,
            "requires_smt" => c.constraints.requires_smt = boolean(nv, "requires_smt")?,
            "gauntlet" => c.gauntlet = boolean(nv, "gauntlet")?,
            "num_snapshots" => {
                let v: u32 = int(nv)?;
                c.fields.insert("num_snapshots", quote! { #v });
            }
            // Coerced to the fn pointer type here, so a wrong signature is an error at the
            // key, not in generated code.
            "post_vm" => match &nv.value {
                Expr::Path(p) => {
                    c.fields.insert(
                        "post_vm",
                        quote! {
                            ::core::option::Option::Some(#p as ::ktstr::monitor::PostVmFn)
                        },
                    );
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "post_vm takes the path of a `fn(&VmResult) -> anyhow::Result<()>`",
                    ));
                }
            },
            "monitor" => {
                let m = &nv.value;
                c.fields.insert("monitor", quote! { #m });
            }
            "auto_repro" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("auto_repro", quote! { #v });
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "auto_repro takes true or false",
                    ));
                }
            },
            "dump" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("dump", quote! { #v });
                }
                other => {
                    return Err(syn::Error::new_spanned(other, "dump takes true or false"));
                }
            },
            "allow_inconclusive" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("allow_inconclusive", quote! { #v });
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "allow_inconclusive takes true or false",
                    ));
                }
            },
            "kaslr" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("kaslr", quote! { #v });
                }
                other => {
                    return Err(syn::Error::new_spanned(other, "kaslr takes true or false"));
                }
            },
            "record" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => {
                    let v = b.value;
                    c.fields.insert("record", quote! { #v });
                }
                other => {
                    return Err(syn::Error::new_spanned(other, "record takes true or false"));
                }
            },
            "harness_fixture" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => c.harness_fixture = b.value,
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "harness_fixture takes true or false",
                    ));
                }
            },
            k => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    format!(
                        "unknown ktstr_test key `{k}` (known: numa_nodes, llcs, cores, threads, \
                         memory_mib, duration_s, watchdog_timeout_s, expect_err, \
                         expect_err_text, allow_inconclusive, kaslr, record, scheduler, staged_schedulers, auto_repro, dump, probes, \
                         cleanup_budget_ms, num_snapshots, post_vm, monitor, harness_fixture, \
                         min_cpus, max_cpus, requires_smt, min_numa_nodes, min_llcs, gauntlet)"
                    ),
                ));
            }
        }
    }
    // The topology's own validation, at compile time, with its message.
    let sh = c.shape;
    ktstr_topology::Topology::new(sh.numa_nodes, sh.llcs, sh.cores, sh.threads)
        .and_then(|t| t.with_memory_mib(sh.memory_mib))
        .map_err(|e| syn::Error::new(Span::call_site(), e.to_string()))?;
    match (c.watchdog_timeout_s, c.duration_s) {
        (Some(w), Some(d)) if w <= d => {
            return Err(syn::Error::new(
                Span::call_site(),
                format!(
                    "watchdog_timeout_s = {w} must exceed duration_s = {d}: it is the host's \
                     limit for the whole run"
                ),
            ));
        }
        (Some(w), _) => {
            c.fields.insert("watchdog_timeout_s", quote! { #w });
        }
        // The default watchdog follows a given duration.
        (None, Some(d)) => {
            c.fields.insert(
                "watchdog_timeout_s",
                quote! { #d + ::ktstr::test_support::TestConfig::WATCHDOG_MARGIN_S },
            );
        }
        (None, None) => {}
    }
    if c.gauntlet && !c.harness_fixture && gauntlet_presets(&c).is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "no gauntlet preset meets min_cpus/max_cpus/requires_smt/min_numa_nodes/min_llcs \
             (and memory_mib): relax them, or set gauntlet = false (`ktstr topo` lists the \
             presets)",
        ));
    }
    Ok(c)
}

/// The presets a test's gauntlet variants run on: those its constraints
/// allow, whose nodes get enough of its memory.
fn gauntlet_presets(c: &Config) -> Vec<&'static ktstr_topology::Preset> {
    ktstr_topology::PRESETS
        .iter()
        .filter(|p| c.constraints.allows(&p.topology))
        .filter(|p| p.topology.with_memory_mib(c.shape.memory_mib).is_ok())
        .collect()
}

/// The libtest name of a preset's variant function (`llc2-smt` -> `llc2_smt`).
fn preset_ident(name: &str) -> proc_macro2::Ident {
    format_ident!("{}", name.replace(['-', '.'], "_"))
}

/// Declares a test that boots a VM with the declared topology and runs the
/// body inside the guest. Keys: `numa_nodes`, `llcs` (total), `cores` (per
/// LLC), `threads` (per core), `memory_mib`, `duration_s`,
/// `watchdog_timeout_s` (default `duration_s + 60`), `expect_err` (`true`, or
/// the kind the failure must have: a typed error kind such as `"StartupDied"`
/// or a failed check's name such as `"fairness"`), `expect_err_text` (a
/// substring the failure's text must hold; implies `expect_err`),
/// `scheduler` (a `Scheduler` const; default EEVDF), `staged_schedulers = [..]`,
/// `auto_repro` (default true: a scheduler crash reruns in a probe VM),
/// `dump` (default false: print the scheduler's state after a passing test too;
/// a failing one always gets it),
/// `probes = ["fn", ..]` (kernel functions or the scheduler's callbacks whose
/// decoded calls are printed after the VM and given to `post_vm`), `cleanup_budget_ms`,
/// `num_snapshots` (snapshots with every vCPU paused, spread over the body),
/// `post_vm = path` (a `fn(&VmResult) -> anyhow::Result<()>` run on the host
/// after the VM; its error fails the test), `monitor` (a
/// `ktstr::monitor::MonitorChecks` layered over the scheduler's and the
/// defaults: `MonitorChecks::INHERIT.dsq_depth(8, 500).no_stuck()`), and
/// `harness_fixture` (register without a `#[test]`, for tests of the harness
/// that run it with `ktstr::test_support::run_test` and judge its outcome).
///
/// The gauntlet: `min_cpus`, `max_cpus` (default 16), `requires_smt`,
/// `min_numa_nodes`, `min_llcs` choose the topology presets the test also
/// runs on, as `#[ignore]`d variants `<test>::gauntlet::<preset>` (presets'
/// `-` become `_`), run by `cargo ktstr gauntlet` or by
/// `cargo test -- --ignored <filter>`; `gauntlet = false` generates none.
///
/// An `#[ignore]` or `#[ignore = "why"]` on the function (above or below
/// `#[ktstr_test]`) goes on the generated `#[test]`: the suite's long tests
/// are written `#[ignore = "full: ..."]` and run by `cargo xtask test --full`.
#[proc_macro_attribute]
pub fn ktstr_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args =
        parse_macro_input!(attr with Punctuated::<MetaNameValue, Token![,]>::parse_terminated);
    let mut func = parse_macro_input!(item as ItemFn);
    let cfg = match parse_config(args) {
        Ok(c) => c,
        Err(e) => return e.to_compile_error().into(),
    };
    let presets = gauntlet_presets(&cfg);
    let ignores = take_ignores(&mut func);
    if cfg.harness_fixture
        && let Some(first) = ignores.first()
    {
        return syn::Error::new_spanned(
            first,
            "a harness_fixture has no #[test] to ignore: leave #[ignore] to the test that runs it",
        )
        .to_compile_error()
        .into();
    }
    let name = func.sig.ident.clone();
    let body_ident = format_ident!("__ktstr_body_{}", name);
    let entry_ident = format_ident!("__KTSTR_ENTRY_{}", name.to_string().to_uppercase());
    let ctor_ident = format_ident!("__KTSTR_CTOR_{}", name.to_string().to_uppercase());
    func.sig.ident = body_ident.clone();
    let vis = func.vis.clone();
    let Config {
        shape,
        duration_s,
        watchdog_timeout_s,
        harness_fixture,
        constraints: _,
        gauntlet,
        fields,
    } = cfg;
    let ktstr_topology::DeclaredShape {
        numa_nodes,
        llcs,
        cores,
        threads,
        ..
    } = shape;
    // A watchdog given without a duration must exceed the default duration.
    let watchdog_check = match (watchdog_timeout_s, duration_s) {
        (Some(w), None) => quote! {
            const _: () = ::core::assert!(
                #w > ::ktstr::test_support::TestConfig::DEFAULT.duration_s,
                "watchdog_timeout_s must exceed duration_s (default 5): it is the host's \
                 limit for the whole run"
            );
        },
        _ => quote! {},
    };
    let field_names = fields
        .keys()
        .map(|k| proc_macro2::Ident::new(k, Span::call_site()));
    let field_values = fields.values();
    let variants = if gauntlet && !harness_fixture {
        let fns = presets.iter().map(|p| {
            let ident = preset_ident(p.name);
            let pname = p.name;
            let doc = format!(
                " `{name}` on the gauntlet preset `{pname}` ({}).",
                p.topology
            );
            quote! {
                #[doc = #doc]
                #[test]
                #[ignore = "gauntlet variant: cargo ktstr gauntlet, or --ignored with a filter"]
                fn #ident() {
                    ::ktstr::__private::run_gauntlet(&super::super::#entry_ident, #pname);
                }
            }
        });
        quote! {
            /// Gauntlet variants (generated by `#[ktstr_test]`).
            #[allow(non_snake_case)]
            mod #name {
                /// The test on each preset its constraints allow.
                pub mod gauntlet {
                    #(#fns)*
                }
            }
        }
    } else {
        quote! {}
    };
    let doc = format!(" Runs `{name}` in a VM ({numa_nodes}n{llcs}l{cores}c{threads}t).");
    let registration = quote! {
        #[allow(non_snake_case)]
        #func

        #[::ktstr::__private::linkme::distributed_slice(::ktstr::__private::KTSTR_TESTS)]
        #[linkme(crate = ::ktstr::__private::linkme)]
        #[allow(non_upper_case_globals, clippy::needless_update)]
        static #entry_ident: ::ktstr::test_support::TestEntry = ::ktstr::test_support::TestEntry {
            name: concat!(module_path!(), "::", stringify!(#name)),
            func: #body_ident,
            config: ::ktstr::test_support::TestConfig {
                #(#field_names: #field_values,)*
                ..::ktstr::test_support::TestConfig::DEFAULT
            },
        };
        #watchdog_check

        // In the guest the test binary is PID 1: this constructor, run before
        // main, turns it into the guest's init. Elsewhere it returns at once.
        // SAFETY: `.init_array` holds plain `extern "C" fn()` pointers, which
        // is what this static is; the function has no preconditions.
        #[used]
        #[unsafe(link_section = ".init_array")]
        #[allow(non_upper_case_globals)]
        static #ctor_ident: extern "C" fn() = {
            extern "C" fn ktstr_guest_ctor() {
                ::ktstr::__private::guest_ctor();
            }
            ktstr_guest_ctor
        };

    };
    let test_fn = if harness_fixture {
        // Registered for `ktstr::test_support::run_test`, not a #[test] itself.
        quote! {}
    } else {
        quote! {
            #[doc = #doc]
            #[test]
            #(#ignores)*
            #vis fn #name() {
                ::ktstr::__private::run_host(&#entry_ident);
            }
        }
    };
    quote! {
        #registration
        #test_fn
        #variants
    }
    .into()
}

/// Removes the `#[ignore]` attributes from the test's function (which becomes
/// the body, no test) and returns them for the generated `#[test]`.
fn take_ignores(func: &mut ItemFn) -> Vec<syn::Attribute> {
    let (ignores, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut func.attrs)
        .into_iter()
        .partition(|a| a.path().is_ident("ignore"));
    func.attrs = rest;
    ignores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_attributes_move_off_the_body_in_order() {
        let mut func: ItemFn = syn::parse_quote! {
            /// Docs stay.
            #[ignore = "full: long; run with cargo xtask test --full"]
            #[allow(dead_code)]
            fn long_one(ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
        };
        let ignores = take_ignores(&mut func);
        assert_eq!(ignores.len(), 1);
        let shown = quote!(#(#ignores)*).to_string();
        assert!(
            shown.contains("full: long; run with cargo xtask test --full"),
            "{shown}"
        );
        assert!(func.attrs.iter().all(|a| !a.path().is_ident("ignore")));
        // The other attributes (the doc comment, the allow) are still on the body.
        assert_eq!(func.attrs.len(), 2);
    }

    #[test]
    fn a_function_without_ignore_keeps_its_attributes() {
        let mut func: ItemFn = syn::parse_quote! {
            #[inline]
            fn plain() {}
        };
        assert!(take_ignores(&mut func).is_empty());
        assert_eq!(func.attrs.len(), 1);
    }
}
