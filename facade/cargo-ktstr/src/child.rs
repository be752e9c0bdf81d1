//! Running cargo and nextest as children that go when `cargo ktstr` is told to go: nextest
//! runs each test in a process group of its own, so a SIGTERM or SIGHUP sent to `cargo
//! ktstr` alone (a CI runner's cancellation, `kill PID`) would leave the tests and their
//! VMs running. While a child runs, those signals are passed on to it; the child (nextest:
//! "cancelling") ends its tests, and `cargo ktstr` reports its exit as usual. SIGINT is not
//! passed on: a terminal's Ctrl-C reaches the whole foreground group already, and a second
//! one would make nextest kill without cleaning up.

use std::process::{Command, ExitStatus};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// The running child's pid (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only
            // reads an atomic and calls kill, both async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = pass_on as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

/// `c.status()`, passing SIGTERM and SIGHUP on to the child while it runs.
pub fn status(c: &mut Command) -> std::io::Result<ExitStatus> {
    install();
    let mut child = c.spawn()?;
    CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    let st = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigterm_to_cargo_ktstr_ends_its_child() {
        let me = std::process::id() as libc::pid_t;
        let killer = std::thread::spawn(move || {
            // Once the child runs, a SIGTERM to this process alone.
            while CHILD.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(me, libc::SIGTERM) };
        });
        let t0 = std::time::Instant::now();
        let st = status(Command::new("sleep").arg("30")).expect("sleep runs");
        killer.join().expect("the killer thread");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(CHILD.load(Ordering::SeqCst), 0);
    }
}
