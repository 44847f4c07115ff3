//! The kernel's device announcements (uevents) on `NETLINK_KOBJECT_UEVENT`, multicast group 1:
//! what tells PID 1 that a device appeared after boot (a NIC or a disk added to a running VM,
//! a USB keyboard plugged in).
//!
//! A message is the kernel's raw text, no netlink header: `ACTION@DEVPATH` then NUL-separated
//! `KEY=VALUE` pairs (`ACTION`, `DEVPATH`, `SUBSYSTEM`, `MODALIAS` where the bus has one,
//! `SEQNUM`). Only messages from the kernel (sender port 0) are read; udev's own (`libudev`
//! magic, group 2) never reach group 1.

use std::os::fd::{AsFd, BorrowedFd};

use netlink_sys::{protocols, Socket, SocketAddr};

/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;
/// The receive buffer asked for: a burst of devices (a USB hub's worth) must not overflow it.
const RECEIVE_BUFFER: usize = 4 << 20;
/// The largest message: the kernel's `UEVENT_BUFFER_SIZE` is 2048 bytes of environment.
const MESSAGE_MAX: usize = 8192;
/// The most messages one read takes: the rest waits for the next turn of PID 1's loop (the
/// socket stays readable), so a flood cannot keep PID 1 here.
const READ_MAX: usize = 256;

/// One uevent, the fields berth acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, …
    pub action: String,
    /// The device's path under `/sys` (`/devices/pci0000:00/0000:00:04.0`).
    pub devpath: String,
    /// Its bus or class (`pci`, `usb`, `net`, `block`).
    pub subsystem: String,
    /// The alias its driver is found by, where its bus has one.
    pub modalias: Option<String>,
}

impl Uevent {
    /// Reads a kernel message; `None` for anything else (a udev message, a malformed one).
    pub fn parse(message: &[u8]) -> Option<Uevent> {
        let mut fields = message.split(|&b| b == 0).filter(|f| !f.is_empty());
        let header = std::str::from_utf8(fields.next()?).ok()?;
        let (action, devpath) = header.split_once('@')?;
        let mut event = Uevent {
            action: action.to_string(),
            devpath: devpath.to_string(),
            subsystem: String::new(),
            modalias: None,
        };
        for field in fields {
            let Ok(field) = std::str::from_utf8(field) else { continue };
            match field.split_once('=') {
                Some(("ACTION", v)) if v != event.action => return None,
                Some(("SUBSYSTEM", v)) => event.subsystem = v.to_string(),
                Some(("MODALIAS", v)) if !v.is_empty() => event.modalias = Some(v.to_string()),
                _ => {}
            }
        }
        Some(event)
    }

    /// A device that may need a driver: added, with a modalias.
    pub fn wants_driver(&self) -> bool {
        self.action == "add" && self.modalias.is_some()
    }
}

/// The socket the kernel's uevents arrive on (non-blocking).
pub struct UeventSocket {
    socket: Socket,
    buf: Vec<u8>,
}

impl UeventSocket {
    /// Joins the kernel's uevent group.
    pub fn open() -> Result<UeventSocket, String> {
        let mut socket =
            Socket::new(protocols::NETLINK_KOBJECT_UEVENT).map_err(|e| format!("uevent socket: {e}"))?;
        socket
            .bind(&SocketAddr::new(0, KERNEL_GROUP))
            .map_err(|e| format!("uevent socket: bind to the kernel's group: {e}"))?;
        // Past rmem_max: PID 1 has CAP_NET_ADMIN. (A smaller buffer only risks ENOBUFS, which
        // `read` turns into a rescan.)
        if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &RECEIVE_BUFFER)
            .is_err()
        {
            let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        }
        socket.set_non_blocking(true).map_err(|e| format!("uevent socket: {e}"))?;
        Ok(UeventSocket { socket, buf: Vec::with_capacity(MESSAGE_MAX) })
    }

    /// Reads what arrived (at most [`READ_MAX`] messages): the kernel's uevents, in order.
    /// `lost` is set when the kernel dropped some (the buffer overflowed): then every device
    /// must be looked at again.
    pub fn read(&mut self, lost: &mut bool) -> Vec<Uevent> {
        let mut out = Vec::new();
        for _ in 0..READ_MAX {
            self.buf.clear();
            match self.socket.recv_from(&mut self.buf, 0) {
                Ok((_, from)) if from.port_number() == 0 => out.extend(Uevent::parse(&self.buf)),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => *lost = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        out
    }
}

impl AsFd for UeventSocket {
    /// The descriptor to poll for reading.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_uevent_reads_as_its_fields() {
        let message = b"add@/devices/pci0000:00/0000:00:05.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:05.0\0\
SUBSYSTEM=pci\0PCI_CLASS=20000\0PCI_ID=8086:10D3\0MODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\0SEQNUM=1234\0";
        let e = Uevent::parse(message).unwrap();
        assert_eq!(e.action, "add");
        assert_eq!(e.devpath, "/devices/pci0000:00/0000:00:05.0");
        assert_eq!(e.subsystem, "pci");
        assert_eq!(e.modalias.as_deref(), Some("pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"));
        assert!(e.wants_driver());

        // A net device's add has no modalias; a bind is not an add.
        let net =
            Uevent::parse(b"add@/devices/virtual/net/eth0\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=eth0\0")
                .unwrap();
        assert!(!net.wants_driver());
        let bind = Uevent::parse(b"bind@/devices/x\0ACTION=bind\0SUBSYSTEM=pci\0MODALIAS=pci:v1\0").unwrap();
        assert!(!bind.wants_driver());
    }

    #[test]
    fn other_messages_are_not_uevents() {
        // udev's binary messages start with "libudev\0".
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"no header\0ACTION=add\0"), None);
        // The header and the ACTION field disagree.
        assert_eq!(Uevent::parse(b"add@/devices/x\0ACTION=remove\0"), None);
    }
}
