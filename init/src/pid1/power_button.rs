//! The ACPI power button: a host's "shut down" (QEMU `system_powerdown`, a hypervisor's
//! shutdown, the real button) reaches the kernel as an ACPI event, which the `button` driver
//! turns into a key press on the "Power Button" input device. The kernel only reports it; PID 1
//! reads the device (through `evdev`) and shuts the machine down.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// `EV_KEY`.
const EV_KEY: u16 = 1;
/// `KEY_POWER`.
const KEY_POWER: u16 = 116;

/// The open power-button device.
pub struct PowerButton {
    fd: OwnedFd,
    /// `/dev/input/eventN`.
    pub path: String,
}

impl PowerButton {
    /// Finds the "Power Button" input device among `/sys/class/input/event*` and opens it.
    pub fn open() -> Option<PowerButton> {
        let entries = fs::read_dir("/sys/class/input").ok()?;
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names.iter().filter(|n| n.starts_with("event")) {
            let label =
                fs::read_to_string(format!("/sys/class/input/{name}/device/name")).unwrap_or_default();
            if label.trim() != "Power Button" {
                continue;
            }
            let path = format!("/dev/input/{name}");
            if let Ok(fd) =
                open(path.as_str(), OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
            {
                // SAFETY: `open` returned a new descriptor that nothing else owns.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                return Some(PowerButton { fd, path });
            }
        }
        None
    }

    /// Reads the pending input events; true if the power key was pressed.
    pub fn pressed(&self) -> bool {
        // struct input_event on x86_64: timeval (16 bytes), u16 type, u16 code, i32 value.
        let mut buf = [0u8; 24 * 16];
        let mut pressed = false;
        while let Ok(n) = nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            for ev in buf[..n].chunks_exact(24) {
                let kind = u16::from_ne_bytes([ev[16], ev[17]]);
                let code = u16::from_ne_bytes([ev[18], ev[19]]);
                let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    pressed = true;
                }
            }
        }
        pressed
    }
}

impl AsFd for PowerButton {
    /// The descriptor to poll for reading.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
