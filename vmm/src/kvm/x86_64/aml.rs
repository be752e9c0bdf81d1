//! The AML the VMM adds to the DSDT ([`ktstr_acpi::aml`]), checked by iasl.

#[cfg(test)]
mod tests {
    /// iasl (acpica-tools, installed by `cargo xtask setup`) reads the DSDT the
    /// VMM builds back as two PNP0501 devices with their ports and IRQs.
    #[test]
    fn iasl_reads_the_uarts_back_from_the_dsdt() {
        let memory = [ktstr_acpi::MemoryAffinity {
            base: 0,
            length: 1 << 30,
            node: 0,
        }];
        let devices = crate::kvm::x86_64::boot::dsdt_aml();
        let mut config = ktstr_acpi::AcpiConfig::new(&memory);
        config.dsdt_aml = &devices;
        let topo: ktstr_topology::Topology = "1n1l2c1t".parse().expect("topology");
        let tables = ktstr_acpi::build(&topo, &config).expect("tables");
        let dsdt = tables
            .tables()
            .iter()
            .find(|t| &t.signature == b"DSDT")
            .expect("a DSDT");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("dsdt.dat"), &dsdt.bytes).expect("write");
        let out = std::process::Command::new("iasl")
            .args(["-d", "dsdt.dat"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run iasl ({e}): cargo xtask setup installs it"));
        assert!(out.status.success(), "{out:?}");
        let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).expect("dsl");
        // Without iasl's `//` comments, one space between tokens.
        let flat: String = dsl
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "Device (COM1) { Name (_HID, EisaId (\"PNP0501\")",
            "Name (_UID, 0x01)",
            "IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08, )",
            "IRQNoFlags () {4}",
            "Device (COM2)",
            "Name (_UID, 0x02)",
            "IO (Decode16, 0x02F8, 0x02F8, 0x01, 0x08, )",
            "IRQNoFlags () {3}",
        ] {
            assert!(flat.contains(want), "{want:?} not in\n{dsl}");
        }
    }
}
