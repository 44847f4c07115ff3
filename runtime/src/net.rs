//! The one piece of networking every namespace needs: `lo` up.

/// `IFF_UP` as the `short` of `ifr_flags`.
// IFF_UP is 0x1 (<linux/if.h>): it fits a short.
#[allow(clippy::cast_possible_truncation)]
const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;

/// Brings `lo` up in the caller's network namespace with `SIOCSIFFLAGS`; returns the errno on
/// failure. Allocation-free, so a freshly cloned container child may call it.
pub fn loopback_up() -> Result<(), i32> {
    // SAFETY: plain socket/ioctl system calls on a zeroed `ifreq` whose name is set to "lo";
    // the socket is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            result = Err(*libc::__errno_location());
        } else {
            ifr.ifr_ifru.ifru_flags |= IFF_UP;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                result = Err(*libc::__errno_location());
            }
        }
        libc::close(fd);
        result
    }
}
