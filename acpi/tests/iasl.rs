//! Debian's `iasl` (package acpica-tools, installed by `cargo xtask setup`) reads
//! back every table of every preset: disassembly without errors, the CPUs, APIC
//! ids, proximity domains and distances it decodes equal the topology's, and
//! recompiling its disassembly gives our bytes back.
//!
//! The test fails, it never skips, when iasl is missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ktstr_acpi::{AcpiConfig, AcpiTables, build, node_memory_ranges};
use ktstr_topology::{PRESETS, Topology};

/// One subtable (or the table's fixed part) of a disassembly: field -> value.
type Fields = BTreeMap<String, String>;

/// Runs iasl with `args` in `dir`; panics with its output if it fails.
fn iasl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("iasl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run iasl ({e}): install Debian's acpica-tools (cargo xtask setup)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl {args:?} failed:\n{text}");
    // Everything but the compiler's "0 Errors, 0 Warnings" summary.
    let messages = text
        .lines()
        .filter(|l| !l.starts_with("Compilation successful. 0 Errors, 0 Warnings"));
    for line in messages {
        for bad in ["Error", "Warning", "does not contain a valid", "Invalid"] {
            assert!(
                !line.contains(bad),
                "iasl {args:?} reported a problem:\n{text}"
            );
        }
    }
    text
}

/// Splits a data-table disassembly into its fixed part and its subtables.
fn parse_dsl(dsl: &str) -> Vec<Fields> {
    let mut parts = vec![Fields::new()];
    for line in dsl.lines() {
        // "[036h 0054   1]                 Processor ID : 01"
        let Some((_, rest)) = line.split_once(']') else {
            continue;
        };
        let Some((name, value)) = rest.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        if name == "Raw Table Data" {
            break;
        }
        let value = value.split_whitespace().next().unwrap_or_default();
        if name == "Subtable Type" {
            parts.push(Fields::new());
        }
        if let Some(part) = parts.last_mut() {
            part.insert(name.to_owned(), value.to_owned());
        }
    }
    parts
}

fn hex(fields: &Fields, name: &str) -> u64 {
    let v = fields
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{name} = {v}: {e}"))
}

/// The RSDP as an iasl data-table source (iasl 20200925 cannot disassemble an RSDP
/// on its own, it wants an SDT header): iasl compiles it and recomputes both
/// checksums, which must give our bytes.
fn rsdp_source(rsdp: &[u8]) -> String {
    let u32_at = |o: usize| u32::from_le_bytes(rsdp[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(rsdp[o..o + 8].try_into().expect("8 bytes"));
    format!(
        "Signature : \"RSD PTR \"\nChecksum : 00\nOem ID : \"{}\"\nRevision : {:02X}\n\
         RSDT Address : {:08X}\nLength : {:08X}\nXSDT Address : {:016X}\n\
         Extended Checksum : 00\nReserved : 000000\n",
        std::str::from_utf8(&rsdp[9..15]).expect("ASCII OEM id"),
        rsdp[15],
        u32_at(16),
        u32_at(20),
        u64_at(24),
    )
}

fn check_with_iasl(name: &str, topo: &Topology) {
    let memory = node_memory_ranges(topo, 0xc000_0000, 1 << 32);
    let tables: AcpiTables = build(topo, &AcpiConfig::new(&memory)).expect("tables build");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let mut dat = Vec::new();
    for t in tables.tables() {
        let sig = std::str::from_utf8(&t.signature)
            .expect("ASCII signature")
            .to_lowercase();
        if sig == "rsdp" {
            std::fs::write(path.join("rsdp.asl"), rsdp_source(&t.bytes)).expect("write");
            iasl(path, &["-p", "rsdp-compiled", "rsdp.asl"]);
            let compiled = std::fs::read(path.join("rsdp-compiled.aml")).expect("iasl output");
            assert_eq!(compiled, t.bytes, "{name}: iasl's RSDP differs from ours");
            continue;
        }
        std::fs::write(path.join(format!("{sig}.dat")), &t.bytes).expect("write table");
        dat.push(format!("{sig}.dat"));
    }
    let mut args = vec!["-d"];
    args.extend(dat.iter().map(String::as_str));
    iasl(path, &args);

    let read = |sig: &str| {
        let dsl = std::fs::read_to_string(path.join(format!("{sig}.dsl")))
            .unwrap_or_else(|e| panic!("{name}: no {sig}.dsl from iasl: {e}"));
        // iasl flags what it cannot decode with "****" lines inside the output.
        assert!(
            !dsl.contains("****"),
            "{name}: iasl complains in {sig}.dsl:\n{dsl}"
        );
        dsl
    };

    // MADT: every CPU once, in CPU order, UID = CPU number, with its APIC id.
    let madt = parse_dsl(&read("apic"));
    let mut cpus = Vec::new();
    for sub in &madt[1..] {
        match sub["Subtable Type"].as_str() {
            "00" => cpus.push((hex(sub, "Processor ID"), hex(sub, "Local Apic ID"))),
            "09" => cpus.push((hex(sub, "Processor UID"), hex(sub, "Processor x2Apic ID"))),
            _ => {}
        }
    }
    let want: Vec<(u64, u64)> = topo
        .cpus()
        .map(|c| (u64::from(c.cpu), u64::from(c.apic_id)))
        .collect();
    assert_eq!(
        cpus.len(),
        topo.nr_cpus() as usize,
        "{name}: CPU count in MADT"
    );
    assert_eq!(cpus, want, "{name}: MADT CPUs");

    // SRAT: every APIC id once, with its node; memory per node.
    let srat = parse_dsl(&read("srat"));
    let mut domains = BTreeMap::new();
    let mut node_bytes = BTreeMap::new();
    for sub in &srat[1..] {
        let (apic, domain) = match sub["Subtable Type"].as_str() {
            "00" => (
                hex(sub, "Apic ID"),
                hex(sub, "Proximity Domain Low(8)") | hex(sub, "Proximity Domain High(24)") << 8,
            ),
            "02" => (hex(sub, "Apic ID"), hex(sub, "Proximity Domain")),
            "01" => {
                *node_bytes.entry(hex(sub, "Proximity Domain")).or_insert(0) +=
                    hex(sub, "Address Length");
                continue;
            }
            other => panic!("{name}: unexpected SRAT subtable {other}"),
        };
        assert_eq!(
            domains.insert(apic, domain),
            None,
            "{name}: APIC id {apic} twice"
        );
    }
    let want: BTreeMap<u64, u64> = topo
        .cpus()
        .map(|c| (u64::from(c.apic_id), u64::from(c.node)))
        .collect();
    assert_eq!(domains, want, "{name}: SRAT proximity domains");
    for node in 0..topo.numa_nodes() {
        let mib = u64::from(topo.node_memory_mib(node).expect("node exists"));
        assert_eq!(
            node_bytes.get(&u64::from(node)),
            Some(&(mib << 20)),
            "{name}: node {node}"
        );
    }

    // SLIT: the distance matrix.
    let slit = parse_dsl(&read("slit"));
    let n = topo.numa_nodes();
    assert_eq!(
        hex(&slit[0], "Localities"),
        u64::from(n),
        "{name}: localities"
    );
    let dsl = read("slit");
    for from in 0..n {
        let label = format!("Locality {from:>3}");
        let line = dsl
            .lines()
            .find(|l| l.contains(&format!("{label} :")))
            .unwrap_or_else(|| panic!("{name}: no {label} row"));
        let (_, row) = line.split_once(" : ").expect("a value");
        let row: Vec<u8> = row
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect();
        assert_eq!(
            row,
            topo.distance_row(from).expect("node exists"),
            "{name}: SLIT row {from}"
        );
    }

    // FADT: hardware-reduced, X_DSDT points at the DSDT.
    let fadt = read("facp");
    assert!(
        fadt.contains("Hardware Reduced (V5) : 1"),
        "{name}: FADT not hardware-reduced"
    );
    let dsdt_at = tables.get(b"DSDT").expect("a DSDT").address;
    assert!(
        fadt.contains(&format!("DSDT Address : {dsdt_at:016X}")),
        "{name}: X_DSDT"
    );
    assert!(
        read("dsdt").contains("Name (_S5, Package (0x02)"),
        "{name}: DSDT \\_S5"
    );

    // Recompiling iasl's disassembly gives our bytes back (the header's checksum and
    // compiler id/revision are iasl's own).
    for t in tables.tables().iter().filter(|t| &t.signature != b"RSDP") {
        let sig = std::str::from_utf8(&t.signature)
            .expect("ASCII")
            .to_lowercase();
        let out = format!("{sig}-recompiled");
        iasl(path, &["-p", &out, &format!("{sig}.dsl")]);
        let again = std::fs::read(path.join(format!("{out}.aml"))).expect("iasl output");
        assert_eq!(
            again.len(),
            t.bytes.len(),
            "{name}: {sig} length after recompiling"
        );
        assert_eq!(&again[..9], &t.bytes[..9], "{name}: {sig} header");
        assert_eq!(&again[10..28], &t.bytes[10..28], "{name}: {sig} header");
        assert_eq!(
            &again[36..],
            &t.bytes[36..],
            "{name}: {sig} body after recompiling"
        );
    }
}

#[test]
fn iasl_reads_every_preset() {
    for p in PRESETS {
        check_with_iasl(p.name, &p.topology);
    }
}

#[test]
fn iasl_reads_x2apic_entries_and_custom_distances() {
    // APIC ids up to 423 (x2APIC entries) and a non-default distance.
    let topo = Topology::new(2, 6, 20, 2)
        .and_then(|t| t.with_distance(0, 1, 17))
        .expect("valid");
    check_with_iasl("2n6l20c2t", &topo);
}
