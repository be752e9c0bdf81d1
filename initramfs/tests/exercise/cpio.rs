//! The cpio reader on arbitrary bytes, then the writer on whatever it read.
//!
//! Properties: `parse` never panics; an archive rebuilt from the parsed entries
//! (those the writer accepts) writes to memory, its bytes parse back, and
//! rebuilding from those gives the same bytes again (the writer's output is a
//! fixed point of read-then-write).

use ktstr_initramfs::{Archive, Entry, EntryKind, parse};

pub fn exercise(data: &[u8]) {
    let entries = match parse(data) {
        Ok(entries) => entries,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let first = rebuild(&entries)
        .to_vec()
        .expect("an archive of in-memory bytes writes");
    let back = parse(&first).expect("the writer's output parses");
    let second = rebuild(&back)
        .to_vec()
        .expect("an archive of in-memory bytes writes");
    assert_eq!(first, second, "read-then-write is not a fixed point");
}

/// An archive of every entry the writer accepts, in order (a later entry for
/// the same path wins, or is refused when its kind conflicts).
fn rebuild(entries: &[Entry<'_>]) -> Archive {
    let mut a = Archive::new();
    for e in entries {
        let Ok(name) = std::str::from_utf8(e.name) else {
            continue;
        };
        let added = match e.kind() {
            EntryKind::Dir => a.add_dir(name, e.mode),
            EntryKind::File => a.add_bytes(name, e.mode, e.data.to_vec()),
            EntryKind::Symlink => match std::str::from_utf8(e.data) {
                Ok(target) => a.add_symlink(name, target),
                Err(_) => continue,
            },
            EntryKind::Other => continue,
        };
        if let Err(err) = added {
            let _ = err.to_string();
        }
    }
    a
}
