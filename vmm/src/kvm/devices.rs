//! The port-I/O devices of the VM: the two 16550 UARTs (vm-superio, interrupts
//! through irqfds), the i8042's reset line, the ACPI sleep control register
//! (power-off) and the PC reset control port. Everything else reads as
//! all-ones (no device) and ignores writes.

use std::io::Write;
use std::sync::Mutex;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The FADT's sleep control and status registers (I/O ports of our choosing).
pub(crate) const PORT_SLEEP_CONTROL: u16 = 0x600;
pub(crate) const PORT_SLEEP_STATUS: u16 = 0x601;
/// The PC's reset control register; writing bit 2 resets (the FADT reset register).
pub(crate) const PORT_PCI_RESET: u16 = 0xcf9;
pub(crate) const PCI_RESET_VALUE: u8 = 0x6;
/// COM1 (kernel console) and COM2 (test reports), 8 registers each, on IRQ 4 and 3.
pub(crate) const COM1: u16 = 0x3f8;
pub(crate) const COM2: u16 = 0x2f8;
pub(crate) const COM1_IRQ: u32 = 4;
pub(crate) const COM2_IRQ: u32 = 3;
/// i8042 command port; command 0xfe pulses the CPU reset line.
const I8042_COMMAND: u16 = 0x64;
const I8042_DATA: u16 = 0x60;
const I8042_RESET: u8 = 0xfe;
/// ACPI 6.5 §4.8.3.7: SLP_EN is bit 5, SLP_TYP bits 4:2.
const SLP_EN: u8 = 1 << 5;

/// What a guest write asked the machine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusEvent {
    PowerOff,
    Reset,
}

/// Raises a serial interrupt by writing its irqfd.
#[derive(Debug)]
pub(crate) struct IrqTrigger(pub(crate) EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

pub(crate) type Uart = Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

/// All port-I/O devices, shared by the vCPU threads and the event loop.
pub(crate) struct IoBus {
    pub(crate) com1: Mutex<Uart>,
    pub(crate) com2: Mutex<Uart>,
}

impl std::fmt::Debug for IoBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoBus")
    }
}

fn lock(m: &Mutex<Uart>) -> std::sync::MutexGuard<'_, Uart> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IoBus {
    /// Replaces the UARTs' outputs by sinks, closing the pipes behind them.
    pub(crate) fn close_outputs(&self) {
        for uart in [&self.com1, &self.com2] {
            *lock(uart).writer_mut() = Box::new(std::io::sink());
        }
    }

    /// The UARTs' registers and receive FIFOs, COM1 then COM2.
    pub(crate) fn serial_states(&self) -> [vm_superio::serial::SerialState; 2] {
        [lock(&self.com1).state(), lock(&self.com2).state()]
    }

    /// A guest `in` of `data.len()` bytes from `port`.
    pub(crate) fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            p if (COM1..COM1 + 8).contains(&p) => data[0] = lock(&self.com1).read((p - COM1) as u8),
            p if (COM2..COM2 + 8).contains(&p) => data[0] = lock(&self.com2).read((p - COM2) as u8),
            // i8042 status: output buffer empty, input buffer empty.
            I8042_COMMAND => data[0] = 0,
            I8042_DATA => data[0] = 0,
            PORT_SLEEP_STATUS => data[0] = 0,
            _ => {}
        }
    }

    /// A guest `out` to `port`; returns what the machine must do, if anything.
    pub(crate) fn write(&self, port: u16, data: &[u8]) -> Option<BusEvent> {
        let byte = *data.first()?;
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                // A full pipe or a closed console drops output: the guest must not stall.
                let _ = lock(&self.com1).write((p - COM1) as u8, byte);
                None
            }
            p if (COM2..COM2 + 8).contains(&p) => {
                let _ = lock(&self.com2).write((p - COM2) as u8, byte);
                None
            }
            I8042_COMMAND if byte == I8042_RESET => Some(BusEvent::Reset),
            PORT_PCI_RESET if byte & 0x4 != 0 => Some(BusEvent::Reset),
            PORT_SLEEP_CONTROL if byte & SLP_EN != 0 => {
                let sleep_type = (byte >> 2) & 0x7;
                (sleep_type == ktstr_acpi::S5_SLEEP_TYPE).then_some(BusEvent::PowerOff)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart(sink: Sink) -> Mutex<Uart> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        Mutex::new(Serial::new(IrqTrigger(evt), Box::new(sink)))
    }

    #[test]
    fn ports_route_to_devices_and_events() {
        let (a, b) = (Sink::default(), Sink::default());
        let bus = IoBus {
            com1: uart(a.clone()),
            com2: uart(b.clone()),
        };
        assert_eq!(bus.write(COM2, b"x"), None);
        assert_eq!(bus.write(COM1, b"y"), None);
        assert_eq!(*b.0.lock().expect("b"), b"x");
        assert_eq!(*a.0.lock().expect("a"), b"y");
        assert_eq!(bus.write(0x64, &[0xfe]), Some(BusEvent::Reset));
        assert_eq!(bus.write(0x64, &[0xd1]), None);
        assert_eq!(
            bus.write(PORT_PCI_RESET, &[PCI_RESET_VALUE]),
            Some(BusEvent::Reset)
        );
        assert_eq!(
            bus.write(PORT_SLEEP_CONTROL, &[(5 << 2) | SLP_EN]),
            Some(BusEvent::PowerOff)
        );
        assert_eq!(bus.write(PORT_SLEEP_CONTROL, &[(3 << 2) | SLP_EN]), None);
        let mut d = [0u8; 4];
        bus.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
