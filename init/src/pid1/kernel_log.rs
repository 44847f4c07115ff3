//! The kernel's log as PID 1 reads it: `/dev/kmsg`, one record per `read`, never blocking.
//!
//! Three uses. With `[log] syslog`, [`KernelForward`] sends every record of the kernel's own
//! (facility `kern`; PID 1's lines written there are left out: it sends those itself) to the
//! collector at its level, from the first record of the boot on. Once the verified system
//! partition is mounted, [`KernelLog`] follows the log for
//! dm-verity's reports of a block that does not match its hash (`device-mapper: verity:
//! MAJ:MIN: data block N is corrupted`; the kernel prints at most 100 per device), so that a
//! tampered partition is an event naming it, not only an I/O error in some container. And when
//! the plan is missing from the initramfs, [`initramfs_failure`] finds the kernel's own reason
//! (`Initramfs unpacking failed: write error`: the archive did not fit in RAM).

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};

use berth_schema::syslog::{Priority, FACILITY_KERN};

use crate::pid1::event_source::{EventSource, Pid1Event};
use crate::pid1::log;

/// The longest record the kernel writes (`CONSOLE_EXT_LOG_MAX`).
const RECORD_MAX: usize = 8192;
/// Records read in one round at most: the loop must not starve the other sources.
const RECORDS_PER_ROUND: usize = 256;
/// Records read looking for the initramfs's failure at most (the whole ring of a big log).
const RECORDS_AT_BOOT: usize = 100_000;

/// One record's message: what follows `PRIORITY,SEQUENCE,TIME,FLAGS;` up to the end of line.
pub fn record_message(record: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(record).ok()?;
    let (_, rest) = text.split_once(';')?;
    Some(rest.split('\n').next().unwrap_or(rest))
}

/// A record's facility and level (`PRIORITY` = facility × 8 + level).
pub fn record_priority(record: &[u8]) -> Option<(u8, u8)> {
    let end = record.iter().position(|b| *b == b',')?;
    let pri: u16 = std::str::from_utf8(&record[..end]).ok()?.parse().ok()?;
    Some((u8::try_from(pri >> 3).ok()?, u8::try_from(pri & 7).ok()?))
}

/// `/dev/kmsg` opened for following: non-blocking, one record per read.
struct Follower {
    file: File,
    buf: Vec<u8>,
}

impl Follower {
    /// From the first record still in the ring; with `from_end`, from the next one on.
    fn open(from_end: bool) -> Option<Follower> {
        let mut file = open_kmsg().ok()?;
        if from_end {
            file.seek(SeekFrom::End(0)).ok()?;
        }
        Some(Follower { file, buf: vec![0u8; RECORD_MAX] })
    }

    /// Hands each record that is there to `each` (at most [`RECORDS_PER_ROUND`]: the loop must
    /// not starve the other sources). An error means nothing more can be read.
    fn read_ready(&mut self, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
        for _ in 0..RECORDS_PER_ROUND {
            match next_record(&mut self.file, &mut self.buf)? {
                Some(record) => each(record),
                None => break,
            }
        }
        Ok(())
    }

    fn poll_fd(&self) -> PollFd<'_> {
        PollFd::new(self.file.as_fd(), PollFlags::POLLIN)
    }
}

/// Sends the kernel's records to the remote syslog collector, at their levels.
pub struct KernelForward(Follower);

impl KernelForward {
    /// Starts at the first record still in the kernel's ring (the boot's, usually); `None`
    /// when `/dev/kmsg` cannot be opened.
    pub fn start() -> Option<KernelForward> {
        Follower::open(false).map(KernelForward)
    }
}

impl EventSource for Option<KernelForward> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.as_ref().map(|k| k.0.poll_fd()));
    }

    fn service(&mut self, _now: Instant, _out: &mut Vec<Pid1Event>) {
        let Some(k) = self else { return };
        let sent = k.0.read_ready(|record| {
            if let (Some((FACILITY_KERN, level)), Some(message)) =
                (record_priority(record), record_message(record))
            {
                crate::pid1::syslog::send_as(
                    Priority::kernel(level),
                    "kernel",
                    None,
                    "-",
                    message.as_bytes(),
                );
            }
        });
        if let Err(e) = sent {
            log::warn(&format!("/dev/kmsg: {e}: the kernel's log is no longer sent to the collector"));
            *self = None;
        }
    }
}

/// A block dm-verity found corrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The underlying device, `MAJOR:MINOR`.
    pub device: String,
    /// `data` or `metadata` (a block of the hash tree).
    pub kind: String,
    /// The block's number (4 KiB blocks).
    pub block: u64,
}

/// Reads dm-verity's report of a corrupted block from a log message.
pub fn verity_corruption(message: &str) -> Option<Corruption> {
    let rest = message.strip_prefix("device-mapper: verity: ")?;
    let (device, rest) = rest.split_once(": ")?;
    let (kind, rest) = rest.split_once(" block ")?;
    let block = rest.strip_suffix(" is corrupted")?.parse().ok()?;
    Some(Corruption { device: device.to_string(), kind: kind.to_string(), block })
}

/// Opens `/dev/kmsg` for reading, without blocking.
fn open_kmsg() -> std::io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open("/dev/kmsg")
}

/// Reads the next record into `buf`: `Ok(None)` when there is none yet. A record overwritten
/// before it was read (`EPIPE`) is skipped.
fn next_record<'b>(file: &mut File, buf: &'b mut [u8]) -> std::io::Result<Option<&'b [u8]>> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(Some(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The kernel's report that it could not unpack the whole initramfs, if the log has one.
pub fn initramfs_failure() -> Option<String> {
    let mut file = open_kmsg().ok()?;
    let mut buf = vec![0u8; RECORD_MAX];
    for _ in 0..RECORDS_AT_BOOT {
        let record = next_record(&mut file, &mut buf).ok()??;
        if let Some(m) = record_message(record).filter(|m| m.starts_with("Initramfs unpacking failed")) {
            return Some(m.to_string());
        }
    }
    None
}

/// Follows the kernel log for dm-verity's reports on the system partition's disk.
pub struct KernelLog {
    follower: Follower,
    /// The partition's disk (`vda2`) and its `MAJOR:MINOR`.
    disk: (String, String),
    /// The partition's name in events (`berth-system-a`).
    partition: String,
}

impl KernelLog {
    /// Starts following the log from now on, for corruption of `disk` (a name under
    /// `/sys/class/block`), reported as the partition `partition`; `None` when the log or the
    /// disk's number cannot be read.
    pub fn follow(disk: &str, partition: &str) -> Option<KernelLog> {
        let number = std::fs::read_to_string(format!("/sys/class/block/{disk}/dev")).ok()?;
        Some(KernelLog {
            follower: Follower::open(true)?,
            disk: (disk.to_string(), number.trim().to_string()),
            partition: partition.to_string(),
        })
    }

    /// Reports a corruption of the partition's disk.
    fn report(disk: &(String, String), partition: &str, c: &Corruption) {
        log::error(&format!(
            "the system partition ({}) has a corrupted {} block {}: reading it fails with an I/O error",
            disk.0, c.kind, c.block
        ));
        log::emit(
            log::event("system_partition.corrupted")
                .with("partition", partition)
                .with("disk", &disk.0)
                .with("kind", &c.kind)
                .with("block", c.block.to_string()),
        );
    }
}

impl EventSource for Option<KernelLog> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.as_ref().map(|k| k.follower.poll_fd()));
    }

    fn service(&mut self, _now: Instant, _out: &mut Vec<Pid1Event>) {
        let Some(KernelLog { follower, disk, partition }) = self else { return };
        let read = follower.read_ready(|record| {
            if let Some(c) = record_message(record).and_then(verity_corruption).filter(|c| c.device == disk.1)
            {
                KernelLog::report(disk, partition, &c);
            }
        });
        if let Err(e) = read {
            log::warn(&format!("/dev/kmsg: {e}: verity failures are no longer reported"));
            *self = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_verity_reports_are_read() {
        let record =
            b"3,1234,56789012,-;device-mapper: verity: 254:2: data block 70 is corrupted\n SUBSYSTEM=block\n";
        let m = record_message(record).unwrap();
        assert_eq!(m, "device-mapper: verity: 254:2: data block 70 is corrupted");
        assert_eq!(
            verity_corruption(m),
            Some(Corruption { device: "254:2".into(), kind: "data".into(), block: 70 })
        );
        let meta = verity_corruption("device-mapper: verity: 8:1: metadata block 3 is corrupted").unwrap();
        assert_eq!((meta.kind.as_str(), meta.block), ("metadata", 3));
        for other in [
            "device-mapper: verity: 254:2: reached maximum errors",
            "device-mapper: verity: 254:2: data block x is corrupted",
            "SQUASHFS error: Unable to read data cache entry [2c000]",
        ] {
            assert_eq!(verity_corruption(other), None, "{other}");
        }
        assert_eq!(record_message(b"no separator"), None);
        assert_eq!(record_priority(record), Some((0, 3)), "kern.err");
        assert_eq!(record_priority(b"14,7,9,-;berth: hello\n"), Some((1, 6)), "user.info: PID 1's own");
        assert_eq!(record_priority(b"x;y"), None);
        assert_eq!(
            record_message(b"0,1,2,-;Initramfs unpacking failed: write error\n"),
            Some("Initramfs unpacking failed: write error")
        );
    }
}
