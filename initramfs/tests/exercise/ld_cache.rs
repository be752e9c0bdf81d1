//! The ld.so.cache parser on arbitrary bytes, then a lookup of every soname it
//! holds. Properties: nothing panics, and each entry's own soname finds at
//! least that entry.

pub fn exercise(data: &[u8]) {
    match ktstr_initramfs::exercise_ld_cache(data) {
        Ok((entries, found)) => assert!(
            found >= entries,
            "{entries} entries, but their sonames found only {found} paths"
        ),
        Err(reason) => {
            let _ = reason.len();
        }
    }
}
