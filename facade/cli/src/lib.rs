//! The commands of the `ktstr` binary, shared with `cargo ktstr`: boot a
//! shell VM with a topology, show topologies. (Kernels: `ktstr_kernel::cli`.)

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use ktstr::config::HostConfig;
use ktstr::shell::{GUEST_DIED_STATUS, ShellError, ShellOptions};
use ktstr_kernel::KernelError;
use ktstr_topology::{Topology, TopologyError};

/// Why a command of the `ktstr` binary failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmdError {
    /// A topology given is neither `NnLlCcTt` nor a preset.
    #[error("topology {spec:?}: {why} (use NnLlCcTt such as 1n2l4c2t, or a preset: `ktstr topo`)")]
    BadTopology {
        /// The topology as given.
        spec: String,
        /// What is wrong with it.
        why: TopologyError,
    },
    /// `--memory-mib` that the topology cannot have.
    #[error("--memory-mib {mib}: {why}")]
    BadMemory {
        /// The memory as given.
        mib: u64,
        /// What is wrong with it.
        why: TopologyError,
    },
    /// `--kernel` of a shell names several kernels.
    #[error("--kernel {spec} names {count} kernels; a shell boots one")]
    SeveralKernels {
        /// The spec as given.
        spec: String,
        /// How many it names.
        count: usize,
    },
    /// The kernel's vmlinux could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The vmlinux.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel's vmlinux has no usable BTF.
    #[error("{}: BTF: {why}", vmlinux.display())]
    Btf {
        /// The vmlinux.
        vmlinux: PathBuf,
        /// What the BTF parser said.
        why: ktstr_btf::BtfError,
    },
    /// Resolving or fetching the kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A `kernel` subcommand failed.
    #[error(transparent)]
    KernelCmd(#[from] ktstr_kernel::cli::KernelCmdError),
    /// The shell VM could not run.
    #[error(transparent)]
    Shell(#[from] ShellError),
}

/// Test Linux schedulers in VMs with declared CPU topologies.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// the subcommand
    #[argh(subcommand)]
    pub cmd: Cmd,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
#[allow(missing_docs)]
pub enum Cmd {
    Shell(ShellCmd),
    Topo(TopoCmd),
    Kernel(ktstr_kernel::cli::KernelCmd),
    Probe(ProbeCmd),
}

/// Probes on request (`#[ktstr_test(probes = [..])]`): what can be probed.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct ProbeCmd {
    /// the subcommand
    #[argh(subcommand)]
    pub cmd: ProbeSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
#[allow(missing_docs)]
pub enum ProbeSub {
    List(ProbeListCmd),
}

/// List the kernel functions a test can name in `probes = [..]`, with the
/// task and runqueue arguments each call decodes (and `file:line` when the
/// kernel's debug info is cached).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ProbeListCmd {
    /// only functions whose name contains this
    #[argh(positional)]
    pattern: Option<String>,
    /// kernel: a version of a cached kernel (7.3, 7.0.13), a vmlinux, bzImage, build tree or cache entry (default: KTSTR_KERNEL, then the newest cached)
    #[argh(option)]
    kernel: Option<ktstr_kernel::KernelSpec>,
}

/// `ktstr probe list`: the probeable functions of the kernel a run boots.
pub fn probe(cmd: &ProbeCmd, host: &HostConfig) -> Result<(), CmdError> {
    let ProbeSub::List(list) = &cmd.cmd;
    let kernel = host.resolve_kernel(list.kernel.as_ref())?;
    let bytes = std::fs::read(&kernel.vmlinux).map_err(|source| CmdError::Read {
        path: kernel.vmlinux.clone(),
        source,
    })?;
    let btf = ktstr_btf::elf::btf_section(&bytes)
        .and_then(ktstr_btf::Btf::parse)
        .map_err(|why| CmdError::Btf {
            vmlinux: kernel.vmlinux.clone(),
            why,
        })?;
    let index = kernel
        .vmlinux
        .parent()
        .map(ktstr_kernel::lines::LineIndex::load)
        .transpose()?
        .flatten();
    let pattern = list.pattern.as_deref().unwrap_or("");
    let found = ktstr::probe::probeable(&btf, pattern);
    for f in &found {
        let name = f.split('(').next().unwrap_or(f);
        match index.as_ref().and_then(|i| i.locate(name)) {
            Some(loc) => println!("{f:<64} {loc}"),
            None => println!("{f}"),
        }
    }
    eprintln!(
        "{} functions of {} match {pattern:?}{}; a notrace or inlined one fails at install \
         with the kernel's reason",
        found.len(),
        kernel.vmlinux.display(),
        if index.is_some() {
            ""
        } else {
            " (no file:line: the kernel's debug info is not cached)"
        }
    );
    Ok(())
}

/// Boot a VM with a topology and run a command in it (or a shell on the console).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "shell")]
pub struct ShellCmd {
    /// topology as NnLlCcTt (e.g. 1n2l4c2t) or a preset name (default 1n1l2c1t)
    #[argh(option, default = "String::from(\"1n1l2c1t\")")]
    topology: String,
    /// kernel: a version (7.3, 7.0.13, newest; fetched if not cached), a vmlinux, bzImage, build tree or cache entry (default: KTSTR_KERNEL, then the newest cached)
    #[argh(option)]
    kernel: Option<ktstr_kernel::KernelSpec>,
    /// guest memory in MiB, spread evenly over the NUMA nodes (default 512)
    #[argh(option)]
    memory_mib: Option<u64>,
    /// command to run in the guest's shell; its exit status becomes ktstr's
    #[argh(option)]
    exec: Option<String>,
    /// kill the VM after it has run this many seconds (a wait for host slots does not count)
    #[argh(option)]
    timeout_s: Option<u64>,
    /// also print the guest's boot messages (to stderr)
    #[argh(switch, short = 'v')]
    verbose: bool,
    /// a host binary to pack at /bin/NAME with its shared libraries (repeatable)
    #[argh(option)]
    include: Vec<PathBuf>,
    /// more kernel command-line arguments (e.g. "loglevel=7")
    #[argh(option)]
    kernel_args: Option<String>,
}

/// Print the CPU map of a topology or preset: cpu -> node, LLC, core, thread, APIC id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "topo")]
pub struct TopoCmd {
    /// topology as NnLlCcTt or a preset name; without it, list the presets
    #[argh(positional)]
    spec: Option<String>,
}

/// A topology given as `NnLlCcTt` or a preset name.
pub fn parse_topology(spec: &str) -> Result<Topology, CmdError> {
    if let Some(p) = ktstr_topology::preset(spec) {
        return Ok(p.topology);
    }
    spec.parse::<Topology>()
        .map_err(|why| CmdError::BadTopology {
            spec: spec.to_string(),
            why,
        })
}

/// `topo`: the presets, or the CPU map of one topology.
pub fn topo(cmd: &TopoCmd) -> Result<(), CmdError> {
    let Some(spec) = &cmd.spec else {
        println!(
            "{:<16} {:<10} {:>5}  BACKENDS  PURPOSE",
            "PRESET", "TOPOLOGY", "CPUS"
        );
        for p in ktstr_topology::PRESETS {
            let backends: Vec<String> = p.backends().map(|b| b.to_string()).collect();
            println!(
                "{:<16} {:<10} {:>5}  {:<8}  {}",
                p.name,
                p.topology.to_string(),
                p.topology.nr_cpus(),
                backends.join(","),
                p.purpose
            );
        }
        return Ok(());
    };
    let t = parse_topology(spec)?;
    println!(
        "{t}: {} CPUs, {} NUMA nodes, {} LLCs, {} cores per LLC, {} threads per core, {} MiB",
        t.nr_cpus(),
        t.numa_nodes(),
        t.llcs(),
        t.cores_per_llc(),
        t.threads_per_core(),
        t.memory_mib()
    );
    println!(
        "{:>4} {:>5} {:>4} {:>5} {:>7} {:>8} {:>4} {:>5}",
        "CPU", "NODE", "LLC", "CORE", "THREAD", "PACKAGE", "DIE", "APIC"
    );
    for c in t.cpus() {
        println!(
            "{:>4} {:>5} {:>4} {:>5} {:>7} {:>8} {:>4} {:>5}",
            c.cpu, c.node, c.llc, c.core, c.thread, c.package, c.die, c.apic_id
        );
    }
    Ok(())
}

/// `shell`: boots the VM and returns the guest command's exit status.
pub fn shell(cmd: ShellCmd, host: &HostConfig) -> Result<ExitCode, CmdError> {
    let mut topology = parse_topology(&cmd.topology)?;
    if let Some(m) = cmd.memory_mib {
        topology = topology
            .with_memory_mib(m)
            .map_err(|why| CmdError::BadMemory { mib: m, why })?;
    }
    // A version is fetched here (the command may download; the library never does).
    let kernel = match cmd.kernel {
        Some(spec) if spec.is_version() => {
            let resolved = ktstr_kernel::cli::resolve_kernels(
                std::slice::from_ref(&spec),
                false,
                false,
                "ktstr",
                &host.kernel_cmd_env(),
            )?;
            match resolved.as_slice() {
                [one] => Some(ktstr_kernel::KernelSpec::Path(one.kernel.vmlinux.clone())),
                _ => {
                    return Err(CmdError::SeveralKernels {
                        spec: spec.to_string(),
                        count: resolved.len(),
                    });
                }
            }
        }
        other => other,
    };
    let opts = ShellOptions {
        topology,
        kernel,
        exec: cmd.exec,
        timeout: cmd.timeout_s.map(Duration::from_secs),
        verbose: cmd.verbose,
        include: cmd.include,
        agent: None,
        kernel_args: cmd.kernel_args.unwrap_or_default(),
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    match ktstr::shell::run(&opts, host, &mut stdout, &mut stderr) {
        Ok(rc) => Ok(ExitCode::from(u8::try_from(rc).unwrap_or(u8::MAX))),
        Err(ShellError::GuestDied { reason }) => {
            eprintln!("ktstr shell: {reason}");
            Ok(ExitCode::from(GUEST_DIED_STATUS as u8))
        }
        Err(e) => Err(e.into()),
    }
}
