//! The monitor of a replay: reads guest memory at exact points of the run,
//! while the ktstr-qemu-gate plugin holds QEMU's one vCPU thread stopped
//! there ([`ktstr_vmm::TcgGate`]). A stop changes nothing in the run, so
//! the same question asked of two replays gets the same answer.
//!
//! Moments are asked by guest time or by instruction count. Guest time is
//! the samples' clock, as the live monitor stamps its samples: the largest
//! `rq->clock` of any CPU (the kernel's `sched_clock`, which the console's
//! timestamps also show). The plugin stops on instruction counts only, so
//! a time is reached by steps on a grid of instruction counts (see
//! [`next_stop`]); the answer is the first grid point whose clock reads the
//! moment or later.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ktstr_vmm::GuestMemoryMmap;

use super::locate::Locator;
use super::sampler::Sampler;
use super::{MonitorError, Sample, SampleKind};

/// Instructions between stops while the kernel is not readable yet (boot).
const BOOT_STEP: u64 = 1 << 24;
/// Instructions between stops at most, once it is (~8 ms of busy guest).
const MAX_STEP: u64 = 1 << 21;
/// The instruction counts a time moment is answered at are multiples of
/// this (~33 µs of busy guest): the resolution of `--at`.
const GRID: u64 = 1 << 13;
/// How far before a time moment (by the guest clock read) the stops go to
/// every grid point: more than the clock read lags (a tick, 4 ms at
/// `HZ=250`, on a busy CPU).
const WINDOW: u64 = 20_000_000;
/// Nanoseconds of guest clock per instruction (`-icount shift=2`).
const NS_PER_INSN: u64 = 4;
/// How long QEMU may take to load the plugin and connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// A point of a replay to read the guest at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Moment {
    /// The first stop where the guest clock (largest `rq->clock`) reads
    /// this many ns or more.
    GuestNs(u64),
    /// The first block entry after this many guest instructions.
    Instructions(u64),
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Moment::GuestNs(ns) => write!(f, "{:.6}s", *ns as f64 / 1e9),
            Moment::Instructions(n) => write!(f, "instruction {n}"),
        }
    }
}

/// A guest time as written on the command line: a decimal number and a
/// unit (`4.25s`, `250ms`, `80us`, `1500ns`), in ns.
pub fn parse_guest_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?}: give a unit (4.25s, 250ms, 80us, 1500ns)"))?;
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "s" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        "ns" => 1.0,
        _ => return Err(format!("{text:?}: the unit is s, ms, us or ns")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: not a number of {unit}"))?;
    let ns = v * scale;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(format!("{text:?}: out of range"));
    }
    Ok(ns.round() as u64)
}

impl std::str::FromStr for Moment {
    type Err = String;

    /// `4.25s` (guest time, any unit of [`parse_guest_time`]) or
    /// `1234567insn` (an instruction count).
    fn from_str(s: &str) -> Result<Moment, String> {
        if let Some(n) = s.trim().strip_suffix("insn") {
            return n
                .trim()
                .parse()
                .map(Moment::Instructions)
                .map_err(|_| format!("{s:?}: not an instruction count"));
        }
        parse_guest_time(s).map(Moment::GuestNs)
    }
}

/// The guest as read at one moment.
#[derive(Debug, Clone)]
pub struct Answer {
    /// What was asked.
    pub asked: Moment,
    /// Guest instructions run before the stop (all vCPUs).
    pub instructions: u64,
    /// The guest clock there, ns (largest `rq->clock`), when readable.
    pub guest_ns: Option<u64>,
    /// What the monitor read there (its `elapsed` is the guest clock).
    pub sample: Sample,
}

/// Which parts of the guest an answer shows (`--show rq,dsq,bpf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Show {
    /// Every CPU's runqueue.
    pub rq: bool,
    /// The scheduler's DSQs.
    pub dsq: bool,
    /// The scheduler's BPF globals.
    pub bpf: bool,
}

impl Default for Show {
    fn default() -> Self {
        Show {
            rq: true,
            dsq: true,
            bpf: true,
        }
    }
}

impl std::str::FromStr for Show {
    type Err = String;

    fn from_str(s: &str) -> Result<Show, String> {
        let mut show = Show {
            rq: false,
            dsq: false,
            bpf: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "rq" => show.rq = true,
                "dsq" => show.dsq = true,
                "bpf" => show.bpf = true,
                "all" => show = Show::default(),
                other => {
                    return Err(format!(
                        "{other:?} is not a part to show: rq, dsq, bpf or all (comma-separated)"
                    ));
                }
            }
        }
        Ok(show)
    }
}

/// `sep` and "oldest wait N ms", or nothing without a wait.
fn wait_text(ns: Option<u64>, sep: &str) -> String {
    ns.map(|w| format!("{sep}oldest wait {:.3}ms", w as f64 / 1e6))
        .unwrap_or_default()
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

impl Answer {
    /// The answer as text: a heading, then the parts `show` asks for.
    pub fn text(&self, show: Show) -> String {
        let s = &self.sample;
        let mut out = format!(
            "at {}: stopped after {} guest instructions, guest clock {}",
            self.asked,
            self.instructions,
            self.guest_ns
                .map_or_else(|| "unread".into(), |ns| format!("{:.6}s", ns as f64 / 1e9))
        );
        match &s.scheduler {
            Ok(Some(n)) => out.push_str(&format!(", scheduler {n}")),
            Ok(None) => out.push_str(", no sched_ext scheduler"),
            Err(e) => out.push_str(&format!(", scheduler unread: {e}")),
        }
        if show.rq {
            match &s.cpus {
                Ok(cpus) => {
                    for c in cpus {
                        out.push_str(&format!(
                            "\n  cpu{:<3} nr_running {} scx {} local_dsq {} curr {} {} switches {}{}",
                            c.cpu,
                            or_dash(c.nr_running),
                            or_dash(c.scx_nr_running),
                            or_dash(c.local_dsq_nr),
                            or_dash(c.curr_pid),
                            c.curr_comm.as_deref().unwrap_or("-"),
                            or_dash(c.nr_switches),
                            wait_text(c.oldest_wait_ns, " ")
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("\n  runqueues unread: {e}")),
            }
        }
        if show.dsq {
            match &s.dsqs {
                Ok(d) if d.is_empty() => out.push_str("\n  dsq: the scheduler created none"),
                Ok(d) => {
                    for d in d {
                        out.push_str(&format!(
                            "\n  dsq {:#x}: {} tasks{}",
                            d.id,
                            d.nr,
                            wait_text(d.oldest_wait_ns, ", ")
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("\n  dsqs unread: {e}")),
            }
        }
        if show.bpf {
            match &s.globals {
                Ok(g) if g.is_empty() => out.push_str("\n  bpf: no data-section globals"),
                Ok(g) => {
                    for g in g {
                        let text = g.type_name.starts_with("char [")
                            && g.bytes
                                .iter()
                                .take_while(|b| **b != 0)
                                .all(|b| b.is_ascii_graphic() || *b == b' ');
                        let value = match g.as_i64() {
                            _ if text => {
                                let n = g
                                    .bytes
                                    .iter()
                                    .position(|b| *b == 0)
                                    .unwrap_or(g.bytes.len());
                                format!("{:?}", String::from_utf8_lossy(&g.bytes[..n]))
                            }
                            Ok(v) => v.to_string(),
                            Err(_) => {
                                let hex: String = g
                                    .bytes
                                    .iter()
                                    .take(32)
                                    .map(|b| format!("{b:02x}"))
                                    .collect();
                                let more = if g.bytes.len() > 32 { "…" } else { "" };
                                format!("{hex}{more} ({} bytes)", g.bytes.len())
                            }
                        };
                        out.push_str(&format!(
                            "\n  bpf {}: {} {} = {value}",
                            g.map, g.type_name, g.name
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("\n  bpf globals unread: {e}")),
            }
        }
        out
    }
}

/// What the gate's host side did over one replay.
#[derive(Debug, Default)]
pub struct GateEnd {
    /// The answers, in the order of their moments.
    pub answers: Vec<Answer>,
    /// Moments the run ended before.
    pub unreached: Vec<Moment>,
    /// Stops the plugin made.
    pub stops: u64,
    /// The instruction count where the machine was handed to a debugger.
    pub held_at: Option<u64>,
    /// The plugin's marks that ran: `(index of the mark, instruction count
    /// before it)`, in the order they ran.
    pub marks: Vec<(usize, u64)>,
    /// Why the monitor could not read the guest, if it never could.
    pub unreadable: Option<MonitorError>,
    /// A protocol or connection failure.
    pub failed: Option<String>,
}

impl GateEnd {
    /// The end of a gate that failed before it served: `why`.
    fn failed(why: String) -> GateEnd {
        GateEnd {
            failed: Some(why),
            ..GateEnd::default()
        }
    }
}

/// A moment where the replay is handed to someone else (a debugger): at
/// its stop, `then` runs with the stop's instruction count while the
/// machine stays stopped, and from then on the gate lets it run free.
pub(crate) struct Hold {
    pub(crate) at: Moment,
    pub(crate) then: Box<dyn FnOnce(u64) + Send>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// What the host side needs to read the replayed kernel.
#[derive(Debug, Clone)]
pub(crate) struct GatePlan {
    /// The booted ELF vmlinux (a `nokaslr` boot).
    pub(crate) vmlinux: PathBuf,
    /// Where a symbol cache goes when the image's directory is read-only.
    pub(crate) cache_root: PathBuf,
    /// CPUs the VM has.
    pub(crate) nr_cpus: u32,
    /// The moments, in any order.
    pub(crate) moments: Vec<Moment>,
}

/// Waits for the plugin to connect; `None` when `quit` is set first (QEMU
/// did not start) or the limit passed.
fn accept(listener: &UnixListener, quit: &AtomicBool) -> Result<UnixStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("the gate's socket: {e}"))?;
    let t0 = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| format!("the gate's connection: {e}"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("the gate's socket: {e}")),
        }
        if quit.load(Ordering::Relaxed) {
            return Err("QEMU ended before the gate plugin connected".into());
        }
        if t0.elapsed() > CONNECT_LIMIT {
            return Err(format!(
                "QEMU did not load the gate plugin within {}s",
                CONNECT_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The host side of one gated replay: accepts the plugin's connection on
/// `listener`, then answers its stops until QEMU exits, reading `mem` at
/// each moment of `plan`. `quit` tells it QEMU ended without connecting.
pub(crate) fn serve(
    plan: &GatePlan,
    mut hold: Option<Hold>,
    listener: &UnixListener,
    mem: &GuestMemoryMmap,
    quit: &Arc<AtomicBool>,
) -> GateEnd {
    let stream = match accept(listener, quit) {
        Ok(s) => s,
        Err(e) => return GateEnd::failed(e),
    };
    let mut end = GateEnd::default();
    let files = super::files::load(&plan.vmlinux, &plan.cache_root);
    let parts = files
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|f| f.parts(&plan.vmlinux));
    let mut locator = match (&files, &parts) {
        (Ok(f), Ok((btf, sig))) => Some(Locator::new(
            mem,
            &f.syms,
            btf,
            sig.clone(),
            false,
            plan.nr_cpus,
        )),
        (Err(e), _) | (_, Err(e)) => {
            end.unreadable = Some(e.clone());
            None
        }
    };
    let mut pending = plan.moments.clone();
    pending.sort();
    pending.dedup();
    // Times and counts are reached separately; keep each list in order.
    let mut sampler: Option<Sampler<'_, GuestMemoryMmap>> = None;
    let out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            end.failed = Some(format!("the gate's connection: {e}"));
            return end;
        }
    };
    let mut out = out;
    // The count the last answer asked for (the first: the plugin's argument).
    let mut asked = first_stop(&plan.moments);
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match said(&line) {
            Said::Hello => continue,
            Said::Mark(index, count) => end.marks.push((index, count)),
            // QEMU is exiting. Its count is not a figure of the run: the
            // vCPUs go on after the guest asks to power off.
            Said::End => break,
            Said::Stop(count) => {
                end.stops += 1;
                if sampler.is_none()
                    && let Some(l) = locator.as_mut()
                    && let Ok((k, _)) = l.kernel()
                {
                    sampler = Some(Sampler::new(k).with_max_cpus(plan.nr_cpus));
                }
                let mut next = step(&mut sampler, &mut pending, (asked, count), &mut end.answers);
                if let Some(h) = hold.take_if(|h| end.answers.iter().any(|a| a.asked == h.at)) {
                    (h.then)(count);
                    end.held_at = Some(count);
                    next = None;
                }
                let reply = match next {
                    Some(n) => {
                        asked = n;
                        format!("run {n}\n")
                    }
                    None => "free\n".into(),
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
            Said::Other => {
                end.failed = Some(format!("the gate plugin said {line:?}"));
                let _ = out.write_all(b"free\n");
                break;
            }
        }
    }
    if end.unreadable.is_none() && sampler.is_none() {
        end.unreadable = locator.map(|l| l.why());
    }
    end.unreached = pending;
    end
}

/// One line of the plugin's (the protocol in the ktstr-qemu-gate crate).
#[derive(Debug, PartialEq, Eq)]
enum Said {
    /// `hello 1`.
    Hello,
    /// `stop C`: stopped after `C` instructions, awaiting an answer.
    Stop(u64),
    /// `mark I C`: mark `I` first ran after `C` instructions.
    Mark(usize, u64),
    /// `end C`: QEMU is exiting.
    End,
    /// Anything else: the protocol broke.
    Other,
}

fn said(line: &str) -> Said {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["hello", ..] => Said::Hello,
        ["end", ..] => Said::End,
        ["stop", c] => c.parse().map_or(Said::Other, Said::Stop),
        ["mark", i, c] => match (i.parse(), c.parse()) {
            (Ok(i), Ok(c)) => Said::Mark(i, c),
            _ => Said::Other,
        },
        _ => Said::Other,
    }
}

/// The host side of a plugin that only marks (no `first=`): accepts its
/// connection on `listener` and collects its `mark` lines until QEMU exits.
/// `quit` tells it QEMU ended without connecting.
pub(crate) fn collect_marks(listener: &UnixListener, quit: &AtomicBool) -> GateEnd {
    let stream = match accept(listener, quit) {
        Ok(s) => s,
        Err(e) => return GateEnd::failed(e),
    };
    let mut end = GateEnd::default();
    let mut out = stream.try_clone().ok();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match said(&line) {
            Said::Hello => {}
            // Not asked for; never leave the machine stopped.
            Said::Stop(_) => {
                if let Some(o) = out.as_mut() {
                    let _ = o.write_all(b"free\n");
                }
            }
            Said::End => break,
            Said::Mark(index, count) => end.marks.push((index, count)),
            Said::Other => {
                end.failed = Some(format!("the gate plugin said {line:?}"));
                break;
            }
        }
    }
    end
}

/// Instructions QEMU runs before the gate's first stop when no count is
/// asked earlier (~1 s of busy guest, before any kernel can be read): the
/// host loads the kernel's symbols and BTF meanwhile.
const FIRST_STOP: u64 = 1 << 28;

/// Where the plugin first stops for `moments`: [`FIRST_STOP`], or the
/// earliest instruction count asked when that comes first.
pub(crate) fn first_stop(moments: &[Moment]) -> u64 {
    moments
        .iter()
        .filter_map(|m| match *m {
            Moment::Instructions(n) => Some(n),
            Moment::GuestNs(_) => None,
        })
        .fold(FIRST_STOP, u64::min)
}

/// Whether a time moment may be answered at a stop: only at stops made
/// for the grid ([`GRID`]), never at one an instruction count asked for,
/// so that what other moments are asked does not move the answer.
fn on_grid(next: u64) -> bool {
    next.is_multiple_of(GRID)
}

/// The first multiple of [`GRID`] above `n`.
fn grid_after(n: u64) -> u64 {
    (n / GRID + 1).saturating_mul(GRID)
}

/// Where to stop next for the moments left, at a stop at `count` where the
/// guest clock read `clock` (`None`: nothing left to ask).
///
/// A time moment is approached on the grid: from afar in steps that stay
/// short of its window (at least 4 ns of guest clock pass per instruction,
/// and the clock read lags the true one), inside [`WINDOW`] at every grid
/// point. So its answer, the first grid point whose clock reads the moment
/// or later, is the same whatever else is asked (unless the guest idled
/// across the whole window, where the clock jumps and no instruction runs).
fn next_stop(pending: &[Moment], count: u64, clock: Option<u64>) -> Option<u64> {
    pending
        .iter()
        .map(|m| match *m {
            Moment::Instructions(n) => n.max(count + 1),
            Moment::GuestNs(t) => match clock {
                Some(c) if t.saturating_sub(c) > WINDOW => {
                    let far = (t - c - WINDOW) / NS_PER_INSN;
                    grid_after(count + far.min(MAX_STEP).saturating_sub(GRID))
                }
                Some(_) => grid_after(count),
                None => grid_after(count + BOOT_STEP - GRID),
            },
        })
        .min()
}

/// At a stop at `count`, made for `asked` (the count the host sent):
/// answers the moments reached, and says where to stop next.
fn step(
    sampler: &mut Option<Sampler<'_, GuestMemoryMmap>>,
    pending: &mut Vec<Moment>,
    (asked, count): (u64, u64),
    answers: &mut Vec<Answer>,
) -> Option<u64> {
    if pending.is_empty() {
        return None;
    }
    let clock = sampler.as_mut().and_then(|s| s.guest_clock());
    let reached = |m: &Moment| match *m {
        Moment::Instructions(n) => count >= n,
        Moment::GuestNs(t) => on_grid(asked) && clock.is_some_and(|c| c >= t),
    };
    if pending.iter().any(reached) {
        let kind = SampleKind::Replay(count);
        let at = Duration::from_nanos(clock.unwrap_or(0));
        let sample = match sampler.as_mut() {
            Some(s) => s.sample(kind, at),
            None => super::session::failed_sample(
                kind,
                at,
                &MonitorError::Unavailable(
                    "the kernel is not readable at this point yet (early boot)".into(),
                ),
            ),
        };
        pending.retain(|m| {
            if reached(m) {
                answers.push(Answer {
                    asked: *m,
                    instructions: count,
                    guest_ns: clock,
                    sample: sample.clone(),
                });
                false
            } else {
                true
            }
        });
    }
    next_stop(pending, count, clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugins_lines_are_read_by_one_parser() {
        assert_eq!(said("hello 1"), Said::Hello);
        assert_eq!(said("stop 8192"), Said::Stop(8192));
        assert_eq!(said("mark 2 1335378435"), Said::Mark(2, 1335378435));
        assert_eq!(said("end 99"), Said::End);
        for bad in ["stop", "stop x", "mark 1", "mark a 5", "run 5", ""] {
            assert_eq!(said(bad), Said::Other, "{bad:?}");
        }
    }

    #[test]
    fn moments_parse_from_times_and_counts() {
        let m = |s: &str| s.parse::<Moment>();
        assert_eq!(m("4.25s"), Ok(Moment::GuestNs(4_250_000_000)));
        assert_eq!(m("250ms"), Ok(Moment::GuestNs(250_000_000)));
        assert_eq!(m("80us"), Ok(Moment::GuestNs(80_000)));
        assert_eq!(m("1500ns"), Ok(Moment::GuestNs(1500)));
        assert_eq!(m("123insn"), Ok(Moment::Instructions(123)));
        assert!(m("4.25").expect_err("refused").contains("unit"));
        assert!(m("4h").expect_err("refused").contains("unit"));
        assert!(m("x.ys").is_err());
        assert!(
            m("12kinsn")
                .expect_err("refused")
                .contains("instruction count")
        );
    }

    #[test]
    fn the_first_stop_leaves_the_boot_alone_unless_a_count_is_asked_earlier() {
        assert_eq!(first_stop(&[Moment::GuestNs(5)]), FIRST_STOP);
        assert!(on_grid(FIRST_STOP));
        let early = [Moment::Instructions(10), Moment::GuestNs(1)];
        assert_eq!(first_stop(&early), 10);
    }

    #[test]
    fn show_takes_parts_by_name() {
        let s: Show = "rq,bpf".parse().expect("parts");
        assert!(s.rq && s.bpf && !s.dsq);
        assert_eq!("all".parse::<Show>(), Ok(Show::default()));
        assert!(
            "rq,tasks"
                .parse::<Show>()
                .expect_err("refused")
                .contains("\"tasks\"")
        );
    }

    #[test]
    fn moments_print_as_asked() {
        assert_eq!(Moment::GuestNs(4_250_000_000).to_string(), "4.250000s");
        assert_eq!(Moment::Instructions(12).to_string(), "instruction 12");
    }

    #[test]
    fn without_a_readable_kernel_counts_are_answered_and_times_wait() {
        let mut pending = vec![Moment::GuestNs(1_000), Moment::Instructions(50)];
        let mut answers = Vec::new();
        // No sampler: times cannot be judged, the next stop is a boot step
        // away or the count asked, whichever comes first.
        let next = step(&mut None, &mut pending, (0, 10), &mut answers);
        assert_eq!(next, Some(50));
        assert!(answers.is_empty());
        // Reached before the kernel can be read: answered, with the reason.
        let next = step(&mut None, &mut pending, (50, 60), &mut answers);
        assert_eq!(next, Some(BOOT_STEP));
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].instructions, 60);
        assert!(answers[0].sample.cpus.is_err());
        assert_eq!(pending, [Moment::GuestNs(1_000)]);
        assert_eq!(
            step(&mut None, &mut Vec::new(), (0, 10), &mut answers),
            None
        );
    }

    #[test]
    fn times_are_approached_on_the_grid_and_swept_inside_the_window() {
        let t = 1_000_000_000;
        let at = |count, clock| next_stop(&[Moment::GuestNs(t)], count, Some(clock));
        // Far: a long step, landing on the grid.
        let far = at(5 * GRID + 3, 0).expect("pending");
        assert!(on_grid(far) && far > 5 * GRID + 3 + GRID);
        assert!(far - (5 * GRID + 3) <= MAX_STEP);
        // Never past the window by the 4 ns an instruction takes at least.
        let near = at(0, t - WINDOW - 8 * GRID).expect("pending");
        assert!(on_grid(near) && near <= 8 * GRID);
        // Inside it: every grid point.
        assert_eq!(at(7 * GRID + 5, t - WINDOW / 2), Some(8 * GRID));
        assert_eq!(at(8 * GRID, t - 1), Some(9 * GRID));
        // A count asked between grid points stops there, but a time moment
        // is not answered at such a stop.
        assert!(!on_grid(GRID + 1));
        let both = [Moment::GuestNs(t), Moment::Instructions(GRID + 1)];
        assert_eq!(next_stop(&both, 0, Some(t - 1)), Some(GRID));
        assert_eq!(next_stop(&both, GRID, Some(t - 1)), Some(GRID + 1));
    }
}
