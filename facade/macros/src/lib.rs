//! Procedural macros of ktstr: `#[ktstr_test]` registers a test that boots a VM.
//!
//! Re-exported by the `ktstr` facade; users never depend on this crate directly.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token, parse_macro_input};

struct Config {
    numa_nodes: u32,
    llcs: u32,
    cores: u32,
    threads: u32,
    memory_mib: u64,
    duration_s: u32,
    watchdog_timeout_s: Option<u32>,
    expect_err: bool,
    expect_err_matching: Option<String>,
    allow_inconclusive: bool,
    kaslr: bool,
    harness_fixture: bool,
    scheduler: Option<Expr>,
    staged: Vec<Expr>,
    auto_repro: bool,
    dump: bool,
    probes: Vec<String>,
    cleanup_budget_ms: u64,
    num_snapshots: u32,
    post_vm: Option<Expr>,
    monitor: Option<Expr>,
    constraints: ktstr_topology::Constraints,
    gauntlet: bool,
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
        numa_nodes: 1,
        llcs: 1,
        cores: 2,
        threads: 1,
        memory_mib: 512,
        duration_s: 5,
        watchdog_timeout_s: None,
        expect_err: false,
        expect_err_matching: None,
        allow_inconclusive: false,
        kaslr: false,
        harness_fixture: false,
        scheduler: None,
        staged: vec![],
        auto_repro: true,
        dump: false,
        probes: vec![],
        cleanup_budget_ms: 5000,
        num_snapshots: 0,
        post_vm: None,
        monitor: None,
        constraints: ktstr_topology::Constraints::DEFAULT,
        gauntlet: true,
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
            "numa_nodes" => c.numa_nodes = int(nv)?,
            "llcs" => c.llcs = int(nv)?,
            "cores" => c.cores = int(nv)?,
            "threads" => c.threads = int(nv)?,
            "memory_mib" => c.memory_mib = int(nv)?,
            "duration_s" => c.duration_s = int(nv)?,
            "watchdog_timeout_s" => c.watchdog_timeout_s = Some(int(nv)?),
            "expect_err" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => c.expect_err = b.value,
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if !s.value().is_empty() => {
                    c.expect_err = true;
                    c.expect_err_matching = Some(s.value());
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expect_err takes true, false, or a non-empty string the failure must \
                         match (an error kind such as \"StartupDied\" or a substring of the \
                         failure text)",
                    ));
                }
            },
            "scheduler" => c.scheduler = Some(nv.value.clone()),
            "staged_schedulers" => match &nv.value {
                Expr::Array(a) => c.staged = a.elems.iter().cloned().collect(),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "staged_schedulers takes [A, B, ..]",
                    ));
                }
            },
            "probes" => c.probes = probes(nv)?,
            "cleanup_budget_ms" => c.cleanup_budget_ms = int(nv)?,
            "min_cpus" => c.constraints.min_cpus = int(nv)?,
            "max_cpus" => c.constraints.max_cpus = int(nv)?,
            "min_numa_nodes" => c.constraints.min_numa_nodes = int(nv)?,
            "min_llcs" => c.constraints.min_llcs = int(nv)?,
            "requires_smt" => c.constraints.requires_smt = boolean(nv, "requires_smt")?,
            "gauntlet" => c.gauntlet = boolean(nv, "gauntlet")?,
            "num_snapshots" => c.num_snapshots = int(nv)?,
            "post_vm" => match &nv.value {
                Expr::Path(_) => c.post_vm = Some(nv.value.clone()),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "post_vm takes the path of a `fn(&VmResult) -> anyhow::Result<()>`",
                    ));
                }
            },
            "monitor" => c.monitor = Some(nv.value.clone()),
            "auto_repro" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => c.auto_repro = b.value,
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
                }) => c.dump = b.value,
                other => {
                    return Err(syn::Error::new_spanned(other, "dump takes true or false"));
                }
            },
            "allow_inconclusive" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => c.allow_inconclusive = b.value,
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
                }) => c.kaslr = b.value,
                other => {
                    return Err(syn::Error::new_spanned(other, "kaslr takes true or false"));
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
                         allow_inconclusive, kaslr, scheduler, staged_schedulers, auto_repro, dump, probes, \
                         cleanup_budget_ms, num_snapshots, post_vm, monitor, harness_fixture, \
                         min_cpus, max_cpus, requires_smt, min_numa_nodes, min_llcs, gauntlet)"
                    ),
                ));
            }
        }
    }
    // The topology's own validation, at compile time, with its message.
    ktstr_topology::Topology::new(c.numa_nodes, c.llcs, c.cores, c.threads)
        .and_then(|t| t.with_memory_mib(c.memory_mib))
        .map_err(|e| syn::Error::new(Span::call_site(), e.to_string()))?;
    if let Some(w) = c.watchdog_timeout_s.filter(|&w| w <= c.duration_s) {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "watchdog_timeout_s = {w} must exceed duration_s = {}: it is the host's \
                 limit for the whole run",
                c.duration_s
            ),
        ));
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
        .filter(|p| p.topology.with_memory_mib(c.memory_mib).is_ok())
        .collect()
}

/// The libtest name of a preset's variant function (`llc2-smt` -> `llc2_smt`).
fn preset_ident(name: &str) -> proc_macro2::Ident {
    format_ident!("{}", name.replace(['-', '.'], "_"))
}

/// Declares a test that boots a VM with the declared topology and runs the
/// body inside the guest. Keys: `numa_nodes`, `llcs` (total), `cores` (per
/// LLC), `threads` (per core), `memory_mib`, `duration_s`,
/// `watchdog_timeout_s` (default `duration_s + 60`), `expect_err`,
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
        numa_nodes,
        llcs,
        cores,
        threads,
        memory_mib,
        duration_s,
        watchdog_timeout_s,
        expect_err,
        expect_err_matching,
        allow_inconclusive,
        kaslr,
        harness_fixture,
        scheduler,
        staged,
        auto_repro,
        dump,
        probes,
        cleanup_budget_ms,
        num_snapshots,
        post_vm,
        monitor,
        constraints: _,
        gauntlet,
    } = cfg;
    let scheduler = match scheduler {
        Some(s) => quote! { ::core::option::Option::Some(#s) },
        None => quote! { ::core::option::Option::None },
    };
    let watchdog = watchdog_timeout_s.unwrap_or(duration_s + 60);
    // Coerced to the fn pointer type here, so a wrong signature is an error
    // at the key, not in generated code.
    let post_vm = match post_vm {
        Some(p) => quote! { ::core::option::Option::Some(#p as ::ktstr::monitor::PostVmFn) },
        None => quote! { ::core::option::Option::None },
    };
    let monitor = match monitor {
        Some(m) => quote! { #m },
        None => quote! { ::ktstr::monitor::MonitorChecks::INHERIT },
    };
    let expect_err_matching = match expect_err_matching {
        Some(s) => quote! { ::core::option::Option::Some(#s) },
        None => quote! { ::core::option::Option::None },
    };
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
        #[allow(non_upper_case_globals)]
        static #entry_ident: ::ktstr::test_support::TestEntry = ::ktstr::test_support::TestEntry {
            name: concat!(module_path!(), "::", stringify!(#name)),
            func: #body_ident,
            config: ::ktstr::test_support::TestConfig {
                numa_nodes: #numa_nodes,
                llcs: #llcs,
                cores: #cores,
                threads: #threads,
                memory_mib: #memory_mib,
                duration_s: #duration_s,
                watchdog_timeout_s: #watchdog,
                expect_err: #expect_err,
                expect_err_matching: #expect_err_matching,
                allow_inconclusive: #allow_inconclusive,
                kaslr: #kaslr,
                scheduler: #scheduler,
                staged_schedulers: &[#(#staged),*],
                auto_repro: #auto_repro,
                dump: #dump,
                probes: &[#(#probes),*],
                cleanup_budget_ms: #cleanup_budget_ms,
                num_snapshots: #num_snapshots,
                post_vm: #post_vm,
                monitor: #monitor,
            },
        };

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
