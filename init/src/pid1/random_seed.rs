//! A random seed carried across boots on the data disk (`[storage]`), as systemd-random-seed
//! does: a machine whose CPU has no RDRAND and no RNG device still has an initialised kernel
//! RNG (CRNG) from its first moments on the second boot, and nothing waits on entropy.
//!
//! The file `.berth-random-seed` at the data disk's root holds a header (magic, whether the
//! seed may be credited) and 512 random bytes. The rules, in order:
//!
//! 1. At boot, right after the disk is mounted ([`RandomSeed::load`]): read the seed. A
//!    creditable one is **removed from the disk and the removal synced before it is used**, so
//!    a crash can never make the same seed count twice; then it goes into the kernel with
//!    `RNDADDENTROPY`, credited (4096 bits). A seed not marked creditable is only mixed in
//!    (written to `/dev/urandom`, no credit). `entropy.seeded` says which, and whether the
//!    kernel's RNG is ready now.
//! 2. A new seed is written at once (temporary file, fsync, rename, directory fsync). It is
//!    marked creditable only when it came from an initialised CRNG (`getrandom(GRND_NONBLOCK)`
//!    succeeded); else it is drawn with `GRND_INSECURE` and marked not creditable.
//! 3. While the seed on disk is not creditable, PID 1's loop looks once a second (a
//!    non-blocking `getrandom` of one byte) and rewrites it once the CRNG is ready (a failed
//!    write ends these tries); and it is rewritten at every deliberate shutdown, before the
//!    disk is unmounted (`entropy.saved`).
//!
//! A data disk is one machine's own: a seed is never shipped in an image. Cloning a data disk
//! clones its seed; the kernel also mixes in each machine's DMI strings and MAC addresses
//! (uncredited), and both clones rewrite their seeds at once.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::PollFd;

use super::event_source::{EventSource, Pid1Event};
use super::log;

/// The seed file's name at the data disk's root.
pub const SEED_FILE: &str = ".berth-random-seed";
/// Random bytes in a seed (the kernel's pool is 256 bits; systemd saves 512 bytes too).
const SEED_BYTES: usize = 512;
const MAGIC: &[u8; 8] = b"berthrs1";
const HEADER: usize = MAGIC.len() + 1;
/// How often the loop looks whether the CRNG is ready, while the seed is not creditable.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A seed as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Drawn from an initialised CRNG: may be credited at the next boot.
    pub creditable: bool,
    /// The random bytes.
    pub data: Vec<u8>,
}

impl Seed {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(u8::from(self.creditable));
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads the file's bytes; an unknown or damaged file is refused (and replaced).
    pub fn decode(bytes: &[u8]) -> Result<Seed, String> {
        if bytes.len() < HEADER + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a berth random seed".into());
        }
        let creditable = match bytes[MAGIC.len()] {
            0 => false,
            1 => true,
            other => return Err(format!("an unknown credit flag {other}")),
        };
        Ok(Seed { creditable, data: bytes[HEADER..].to_vec() })
    }
}

/// The seed on the data disk: where it is, and whether the one there now may be credited.
pub struct RandomSeed {
    path: PathBuf,
    creditable_on_disk: bool,
    /// A save failed (disk full, read-only): the loop stops trying; the shutdown tries again.
    save_failed: bool,
    next_check: Instant,
}

impl RandomSeed {
    /// Step 1 and 2 of the rules: the saved seed into the kernel, a new one onto the disk.
    pub fn load(disk: &Path, now: Instant) -> RandomSeed {
        let path = disk.join(SEED_FILE);
        let found = match std::fs::read(&path) {
            Ok(bytes) => Seed::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let mut event = log::event("entropy.seeded");
        match found {
            Ok(Some(seed)) => {
                // Never credited twice: the seed leaves the disk before it is used.
                let removed = seed.creditable && remove_synced(&path).map_err(|e| log::warn(&e)).is_ok();
                // A seed that cannot be credited (or was not removed first) is mixed in anyway.
                let credited = removed
                    && add_credited(&seed.data).map_err(|e| log::warn(&format!("entropy: {e}"))).is_ok();
                let fed = if credited { Ok(()) } else { add_uncredited(&seed.data) };
                event = event
                    .with("credited", credited)
                    .with("bytes", seed.data.len())
                    .with("digest", digest(&seed.data));
                if let Err(e) = fed {
                    event = event.with("error", e);
                } else if !seed.creditable {
                    event = event.with("reason", "the seed was not drawn from a ready RNG");
                } else if !credited {
                    event = event
                        .with("reason", "it could not be removed from the disk, or RNDADDENTROPY failed");
                }
            }
            Ok(None) => {
                event =
                    event.with("credited", false).with("bytes", 0).with("reason", "no seed yet (first boot)")
            }
            Err(e) => {
                event = event
                    .with("credited", false)
                    .with("bytes", 0)
                    .with("reason", format!("{}: {e}", path.display()))
            }
        }
        log::emit(event.with("crng", if crng_ready() { "ready" } else { "not-ready" }));
        let mut seed =
            RandomSeed { path, creditable_on_disk: false, save_failed: false, next_check: now + CHECK_EVERY };
        seed.save(false);
        seed
    }

    /// Writes a fresh seed, creditable when the CRNG is ready; `say`: emit `entropy.saved`.
    pub fn save(&mut self, say: bool) {
        let seed = draw();
        match write_synced(&self.path, &seed.encode()) {
            Ok(()) => {
                self.creditable_on_disk = seed.creditable;
                self.save_failed = false;
                if say {
                    log::emit(
                        log::event("entropy.saved")
                            .with("creditable", seed.creditable)
                            .with("digest", digest(&seed.data)),
                    );
                }
            }
            Err(e) => {
                self.save_failed = true;
                log::warn(&format!("entropy: cannot save the random seed: {e}"));
            }
        }
    }
}

impl EventSource for Option<RandomSeed> {
    fn interest<'a>(&'a mut self, _fds: &mut Vec<PollFd<'a>>) {}

    fn deadline(&self) -> Option<Instant> {
        self.as_ref().filter(|s| !s.creditable_on_disk && !s.save_failed).map(|s| s.next_check)
    }

    fn service(&mut self, now: Instant, _out: &mut Vec<Pid1Event>) {
        let Some(s) =
            self.as_mut().filter(|s| !s.creditable_on_disk && !s.save_failed && now >= s.next_check)
        else {
            return;
        };
        s.next_check = now + CHECK_EVERY;
        if crng_ready() {
            s.save(true);
        }
    }
}

/// A seed's identity in events (the first 8 bytes of its SHA-256, in hex): the same seed is
/// recognisable from one boot's `entropy.saved` to the next one's `entropy.seeded`.
fn digest(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the kernel's RNG is initialised: a non-blocking `getrandom` of one byte succeeds.
fn crng_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: getrandom writes at most one byte into the buffer it is given.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) == 1 }
}

/// A new seed: from the ready CRNG (creditable), else `GRND_INSECURE` (never blocks).
fn draw() -> Seed {
    let mut data = vec![0u8; SEED_BYTES];
    for (flags, creditable) in [(libc::GRND_NONBLOCK, true), (libc::GRND_INSECURE, false)] {
        // SAFETY: getrandom writes at most `data.len()` bytes into `data`.
        let n = unsafe { libc::getrandom(data.as_mut_ptr().cast(), data.len(), flags) };
        if usize::try_from(n).is_ok_and(|n| n == data.len()) {
            return Seed { creditable, data };
        }
    }
    // Neither (a kernel before 5.6 without a ready CRNG): /dev/urandom never blocks.
    let _ =
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut data));
    Seed { creditable: false, data }
}

nix::ioctl_write_ptr_bad!(rnd_add_entropy, nix::request_code_write!(b'R', 0x03, 8), u8);

/// `RNDADDENTROPY`: `data` into the input pool, credited in full.
fn add_credited(data: &[u8]) -> Result<(), String> {
    let (bits, len) = (i32::try_from(data.len() * 8), i32::try_from(data.len()));
    let (Ok(bits), Ok(len)) = (bits, len) else { return Err("seed too large".into()) };
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + data.len());
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(data);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    // SAFETY: `info` is a complete rand_pool_info (header and `buf_size` bytes) that the kernel
    // only reads during the call; the descriptor is open.
    unsafe { rnd_add_entropy(f.as_raw_fd(), info.as_ptr()) }
        .map(drop)
        .map_err(|e| format!("RNDADDENTROPY: {e}"))
}

/// `data` mixed into the pool without credit.
fn add_uncredited(data: &[u8]) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| format!("/dev/urandom: {e}"))
}

/// Removes `path` and syncs its directory.
fn remove_synced(path: &Path) -> Result<(), String> {
    std::fs::remove_file(path).map_err(|e| format!("entropy: {}: {e}", path.display()))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("entropy: {}: {e}", dir.display()))
}

/// Writes `bytes` to `path` whole or not at all: a synced temporary file renamed over it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("new");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_read_back_and_damage_is_refused() {
        let seed = Seed { creditable: true, data: (0..=255u8).cycle().take(SEED_BYTES).collect() };
        let bytes = seed.encode();
        assert_eq!(bytes.len(), HEADER + SEED_BYTES);
        assert_eq!(Seed::decode(&bytes).unwrap(), seed);
        let plain = Seed { creditable: false, ..seed.clone() };
        assert!(!Seed::decode(&plain.encode()).unwrap().creditable);
        assert_eq!(Seed::decode(b"hello").unwrap_err(), "not a berth random seed");
        assert_eq!(
            Seed::decode(&bytes[..HEADER + 31]).unwrap_err(),
            "not a berth random seed",
            "too short to credit"
        );
        let mut bad = bytes.clone();
        bad[MAGIC.len()] = 7;
        assert_eq!(Seed::decode(&bad).unwrap_err(), "an unknown credit flag 7");
    }

    #[test]
    fn a_seed_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEED_FILE);
        write_synced(&path, b"first").unwrap();
        write_synced(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("new").exists());
        remove_synced(&path).unwrap();
        assert!(!path.exists());
        assert!(write_synced(&dir.path().join("missing/x"), b"x").is_err());
    }

    #[test]
    fn a_drawn_seed_is_creditable_on_a_ready_host() {
        // The host running the tests has an initialised CRNG.
        assert!(crng_ready());
        let s = draw();
        assert!(s.creditable);
        assert_eq!(s.data.len(), SEED_BYTES);
        assert!(s.data.iter().any(|&b| b != 0));
    }
}
