//! Where the caches live: one order, written once.

use std::path::{Path, PathBuf};

/// The cache root from the values of `KTSTR_CACHE_DIR`, `XDG_CACHE_HOME` and
/// `HOME` (the caller reads the environment): the first as is, else
/// `<XDG_CACHE_HOME>/ktstr`, else `<HOME>/.cache/ktstr`. An empty value
/// counts as unset (as the XDG base directory specification says); `None`
/// when none is set.
pub fn root_from(
    cache_dir: Option<&Path>,
    xdg_cache_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(d) = set(cache_dir) {
        return Some(d.to_path_buf());
    }
    if let Some(x) = set(xdg_cache_home) {
        return Some(x.join("ktstr"));
    }
    set(home).map(|h| h.join(".cache/ktstr"))
}

fn set(v: Option<&Path>) -> Option<&Path> {
    v.filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_set_value_wins() {
        let (c, x, h) = (Path::new("/c"), Path::new("/x"), Path::new("/h"));
        assert_eq!(
            root_from(Some(c), Some(x), Some(h)),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            root_from(None, Some(x), Some(h)),
            Some(PathBuf::from("/x/ktstr"))
        );
        assert_eq!(
            root_from(Some(Path::new("")), None, Some(h)),
            Some(PathBuf::from("/h/.cache/ktstr"))
        );
        assert_eq!(root_from(None, None, None), None);
    }
}
