//! The `ktstr` command: boot a shell VM with a topology, show topologies,
//! fetch and list kernels.

use std::process::ExitCode;

use ktstr::config::HostConfig;
use ktstr_cli::{Cli, Cmd, probe, shell, topo};

fn main() -> ExitCode {
    // In a shell VM this binary is the guest's init: that never returns.
    ktstr::shell::agent_main();
    let cli: Cli = argh::from_env();
    let host = match HostConfig::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ktstr: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match cli.cmd {
        Cmd::Shell(c) => shell(c, &host),
        Cmd::Topo(c) => topo(&c).map(|()| ExitCode::SUCCESS),
        Cmd::Probe(c) => probe(&c, &host).map(|()| ExitCode::SUCCESS),
        Cmd::Kernel(k) => k
            .run("ktstr", &host.kernel_cmd_env())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    res.unwrap_or_else(|e| {
        eprintln!("ktstr: error: {}", ktstr::error_text(&e));
        ExitCode::FAILURE
    })
}
