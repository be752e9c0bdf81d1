//! Debian version ordering (deb-version(7)), used to pick the newest kernel
//! package and the newest cached kernel release.

use std::cmp::Ordering;

/// Compares two Debian version strings (`[epoch:]upstream[-revision]`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// The weight of a character in the non-digit runs: `~` sorts before
/// everything (even the end of the string), letters before other characters.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(mut a: &str, mut b: &str) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefix, character by character.
        let na = a.bytes().take_while(|c| !c.is_ascii_digit()).count();
        let nb = b.bytes().take_while(|c| !c.is_ascii_digit()).count();
        let (pa, pb) = (&a.as_bytes()[..na], &b.as_bytes()[..nb]);
        for i in 0..na.max(nb) {
            let o = weight(pa.get(i).copied()).cmp(&weight(pb.get(i).copied()));
            if o != Ordering::Equal {
                return o;
            }
        }
        a = &a[na..];
        b = &b[nb..];
        // Digit run, numerically.
        let da = a.bytes().take_while(u8::is_ascii_digit).count();
        let db = b.bytes().take_while(u8::is_ascii_digit).count();
        let (xa, xb) = (
            a[..da].trim_start_matches('0'),
            b[..db].trim_start_matches('0'),
        );
        let o = xa.len().cmp(&xb.len()).then_with(|| xa.cmp(xb));
        if o != Ordering::Equal {
            return o;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn orders_like_dpkg() {
        let cases = [
            ("7.3.4-1~bpo13+1", "7.3.4-1", Less),
            ("7.3.10+deb13", "7.3.4+deb13", Greater),
            ("7.2.12+deb13", "7.3.4+deb13", Less),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0a", "1.0", Greater),
            ("1.0+b1", "1.0", Greater),
            ("6.12.38-1", "6.12.38-1", Equal),
            ("1.007", "1.7", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
