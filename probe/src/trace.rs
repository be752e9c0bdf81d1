//! Records of the guest's trace buffer: one line of tracefs `trace` each,
//! parsed without trusting it (a line that does not parse is skipped and
//! counted; a value that does not parse becomes a fault, never a panic).

use crate::fields::RawValue;

/// One trace record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Timestamp, nanoseconds of the trace clock.
    pub ts_ns: u64,
    /// The CPU it was recorded on.
    pub cpu: u32,
    /// The event name (`kp0e`, `sched_ext_exit`).
    pub event: String,
    /// Named values, in order.
    pub values: Vec<(String, RawValue)>,
}

impl Record {
    /// The value named `name`.
    pub fn value(&self, name: &str) -> Option<&RawValue> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Parses one line of tracefs `trace` output.
pub fn parse_line(line: &str) -> Option<Record> {
    if line.starts_with('#') {
        return None;
    }
    // "<comm>-<pid> [001] d..2.  18.892838: kp0e: (fn+0x0/0x10) a=0x1 b=\"x\""
    let open = find_cpu_field(line)?;
    let rest = &line[open + 1..];
    let close = rest.find(']')?;
    let cpu: u32 = rest[..close].trim().parse().ok()?;
    let mut words = rest[close + 1..].split_whitespace();
    let _flags = words.next()?;
    let ts = words.next()?.strip_suffix(':')?;
    let ts_ns = parse_ts(ts)?;
    // The event name follows the timestamp.
    let after_ts = rest[close + 1..].find(&format!("{ts}:"))? + ts.len() + 1;
    let tail = rest[close + 1 + after_ts..].trim_start();
    let (event, mut body) = tail.split_once(':')?;
    if event.is_empty() || event.contains(' ') {
        return None;
    }
    body = body.trim_start();
    if body.starts_with('(') {
        body = body.split_once(')').map_or("", |(_, r)| r);
    }
    Some(Record {
        ts_ns,
        cpu,
        event: event.to_string(),
        values: parse_values(body),
    })
}

/// Byte index of the `[` opening the CPU field (`[001]`).
fn find_cpu_field(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b'['
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            && line[i + 1..]
                .find(']')
                .is_some_and(|c| line[i + 1..i + 1 + c].bytes().all(|x| x.is_ascii_digit()))
    })
}

/// `18.892838` -> nanoseconds.
fn parse_ts(ts: &str) -> Option<u64> {
    let (s, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let s: u64 = s.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f: u64 = frac.parse().ok()?;
    let scale = 10u64.pow(9 - u32::try_from(frac.len()).ok()?);
    s.checked_mul(1_000_000_000)?
        .checked_add(f.checked_mul(scale)?)
}

/// `a=0x1 b="x y" c=(fault) d=-3`.
fn parse_values(body: &str) -> Vec<(String, RawValue)> {
    let mut out = Vec::new();
    let mut rest = body.trim_start();
    while let Some((name, after)) = rest.split_once('=') {
        let name = name.trim().to_string();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (RawValue::Str(q[..end].to_string()), &q[end + 1..]),
                None => (RawValue::Str(q.to_string()), ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (parse_num(&after[..end]), &after[end..])
        };
        if !name.is_empty() && !name.contains(' ') {
            out.push((name, value));
        }
        rest = next.trim_start();
    }
    out
}

fn parse_num(s: &str) -> RawValue {
    let n = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(neg) = s.strip_prefix('-') {
        neg.parse::<i64>().ok().map(|v| v.wrapping_neg() as u64)
    } else {
        s.parse::<u64>().ok()
    };
    n.map_or(RawValue::Fault, RawValue::Num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fprobe_line_parses() {
        let l = "     kworker/0:1-97      [001] d..2.    18.892838: kp0e: (enqueue_task_scx+0x4/0x200) a2f0=0x61 a2f1=\"sh x\" a2f2=(fault) a1f0=-3";
        let r = parse_line(l).expect("parses");
        assert_eq!(r.cpu, 1);
        assert_eq!(r.ts_ns, 18_892_838_000);
        assert_eq!(r.event, "kp0e");
        assert_eq!(r.value("a2f0"), Some(&RawValue::Num(0x61)));
        assert_eq!(r.value("a2f1"), Some(&RawValue::Str("sh x".into())));
        assert_eq!(r.value("a2f2"), Some(&RawValue::Fault));
        assert_eq!(r.value("a1f0"), Some(&RawValue::Num((-3i64) as u64)));
    }

    #[test]
    fn a_return_line_and_a_tracepoint_parse() {
        let r = parse_line("  <idle>-0 [000] d.... 5.5: kp1x: (do_pick_task_scx+0x2d8/0xcb0 <- __schedule) a1f0=0x0").expect("parses");
        assert_eq!((r.event.as_str(), r.ts_ns), ("kp1x", 5_500_000_000));
        assert_eq!(r.value("a1f0"), Some(&RawValue::Num(0)));
        let t = parse_line("sh-1 [003] ..... 7.000001: sched_ext_exit: kind=1025").expect("parses");
        assert_eq!(t.event, "sched_ext_exit");
        assert_eq!(t.cpu, 3);
    }

    #[test]
    fn garbage_is_no_record() {
        for l in [
            "",
            "# tracer: nop",
            "[x]",
            "a [001]",
            "a [001] d 1.2",
            "a [001] d 1.2: ",
            "a [001] d 99999999999999999999.1: e: x=1",
            "a [001] d 1.1234567890: e: x=1",
        ] {
            assert_eq!(parse_line(l), None, "{l:?}");
        }
        let r = parse_line("a [001] d 1.2: e: x=0xzz y=\"open").expect("tolerated");
        assert_eq!(r.value("x"), Some(&RawValue::Fault));
        assert_eq!(r.value("y"), Some(&RawValue::Str("open".into())));
    }
}
