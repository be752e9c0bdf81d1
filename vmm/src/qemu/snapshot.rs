//! Saving a QEMU machine to a file and starting machines from it.
//!
//! The image is QEMU's migration stream to a file with the `mapped-ram`
//! capability (QEMU 9.0+): every RAM block's pages sit at fixed offsets of
//! the file, pages that are zero are not written (the file is sparse), and
//! loading reads only the pages written. Guest RAM is the harness's memfds,
//! so loading fills fresh memfds the harness maps, exactly as a booted
//! machine's; the payload region, all zero when the machine was saved, is
//! left as the host filled it before the load.
//!
//! Measured on the 2-core TCG host: a busybox guest on the Debian 7.3 kernel
//! with 512 MiB saved in 2.4 s into a 611 MB sparse file holding 72 MB; a
//! restore loaded in 0.12-0.14 s and the guest answered the host 0.41-0.54 s
//! after the restore began (cold boot to the same point: 11-14 s on a host
//! busy with other VMs).
//!
//! Why not `x-ignore-shared` (guest RAM left out of the stream, the harness
//! copying the memfds itself): QEMU then checks that each ignored block sits
//! at the guest address it had when saved before any device state loads, and
//! the payload region, a PCI BAR the guest placed, is not mapped yet on the
//! restoring side ("Mismatched GPAs for block"): the load fails.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::qmp::Qmp;
use crate::VmmError;

/// How long saving or loading an image may take.
const PATIENCE: Duration = Duration::from_secs(120);

fn error(image: &Path, why: impl Into<String>) -> VmmError {
    VmmError::Snapshot {
        image: image.to_path_buf(),
        why: why.into(),
    }
}

/// The migration channel to or from `image` (a structured address, so the
/// path needs no escaping).
fn channels(image: &Path) -> Value {
    json!([{
        "channel-type": "main",
        "addr": { "transport": "file", "filename": image.to_string_lossy(), "offset": 0 }
    }])
}

fn mapped_ram(qmp: &Qmp) -> Result<(), VmmError> {
    qmp.execute_with(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [{ "capability": "mapped-ram", "state": true }] })),
    )
    .map(drop)
}

/// Waits until the migration to or from `image` completes.
fn completed(qmp: &Qmp, image: &Path) -> Result<(), VmmError> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let st = qmp.execute("query-migrate")?;
        match st.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some(s @ ("failed" | "cancelled")) => {
                let why = st
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                return Err(error(image, format!("migration {s}: {why}")));
            }
            _ if Instant::now() >= deadline => {
                return Err(error(image, format!("not done within {PATIENCE:?}")));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Stops the machine and writes it to `image`.
pub(super) fn save(qmp: &Qmp, image: &Path) -> Result<(), VmmError> {
    if image.exists() {
        std::fs::remove_file(image)
            .map_err(|e| error(image, format!("removing the old image: {e}")))?;
    }
    qmp.execute("stop")?;
    mapped_ram(qmp)?;
    qmp.execute_with("migrate", Some(json!({ "channels": channels(image) })))?;
    completed(qmp, image)
}

/// Checks that `image` is there before a machine starts for it.
pub(super) fn check_image(image: &Path) -> Result<(), VmmError> {
    if image.is_file() {
        Ok(())
    } else {
        Err(error(image, "no such file (save a machine to it first)"))
    }
}

/// Loads `image` into a machine started with `-incoming defer`, then runs it.
pub(super) fn load(qmp: &Qmp, image: &Path) -> Result<(), VmmError> {
    mapped_ram(qmp)?;
    qmp.execute_with(
        "migrate-incoming",
        Some(json!({ "channels": channels(image) })),
    )?;
    completed(qmp, image)?;
    qmp.execute("cont").map(drop)
}
