//! Source locations of a scheduler's BPF callbacks: the BPF object that a
//! libbpf skeleton embeds in the scheduler binary, its `.BTF` and `.BTF.ext`.

use object::{Object, ObjectSection};

/// `EM_BPF` (include/uapi/linux/elf-em.h).
const EM_BPF: u16 = 247;

/// A BPF function and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The function (`ktstr_enqueue`).
    pub name: String,
    /// The ELF section (`struct_ops/ktstr_enqueue`).
    pub section: String,
    /// `file:line` of its first instruction.
    pub location: String,
}

/// The BPF functions of every BPF object found in `binary` (a scheduler's
/// executable, or a BPF object itself). Objects that do not parse are skipped.
pub fn callbacks(binary: &[u8]) -> Vec<Callback> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&binary[at..], b"\x7fELF") {
        let start = at + i;
        at = start + 4;
        let Some(tail) = binary.get(start..) else {
            break;
        };
        let machine = tail.get(18..20).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if machine != Some(EM_BPF) {
            continue;
        }
        // The ELF reader wants its structs aligned (an embedded object sits
        // at any offset: "Invalid ELF header size or alignment"); a fresh
        // allocation is aligned.
        let aligned: Vec<u8> = tail.to_vec();
        out.extend(of_object(&aligned));
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn of_object(elf: &[u8]) -> Vec<Callback> {
    let Ok(file) = object::File::parse(elf) else {
        return Vec::new();
    };
    let data = |name: &str| file.section_by_name(name).and_then(|s| s.data().ok());
    let (Some(btf), Some(ext)) = (data(".BTF"), data(".BTF.ext")) else {
        return Vec::new();
    };
    let Ok(btf) = ktstr_btf::Btf::parse(btf) else {
        return Vec::new();
    };
    let Ok(lines) = ktstr_btf::ext::func_lines(&btf, ext) else {
        return Vec::new();
    };
    lines
        .into_iter()
        .map(|l| Callback {
            name: l.func.to_string(),
            section: l.section.to_string(),
            location: format!(
                "{}:{}",
                std::path::Path::new(l.file)
                    .file_name()
                    .map_or_else(|| l.file.into(), |f| f.to_string_lossy()),
                l.line
            ),
        })
        .collect()
}

/// The `sched_ext_ops` member a callback named `name` implements, by the
/// usual naming (`<prefix>_<op>`), among `ops`.
pub fn op_of<'o>(name: &str, ops: &[&'o str]) -> Option<&'o str> {
    ops.iter()
        .copied()
        .filter(|op| name == *op || name.ends_with(&format!("_{op}")))
        .max_by_key(|op| op.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_follow_the_suffix() {
        let ops = ["enqueue", "dispatch", "select_cpu", "cpu"];
        assert_eq!(op_of("ktstr_select_cpu", &ops), Some("select_cpu"));
        assert_eq!(op_of("ktstr_enqueue", &ops), Some("enqueue"));
        assert_eq!(op_of("helper", &ops), None);
    }

    #[test]
    fn no_objects_in_random_bytes() {
        assert!(callbacks(b"").is_empty());
        let mut junk = b"\x7fELF".repeat(3);
        junk.extend_from_slice(&[0u8; 40]);
        junk[18] = 247;
        assert!(callbacks(&junk).is_empty());
    }
}
