//! The x32 system call table, derived from `arch/x86/entry/syscalls/syscall_64.tbl` (Linux
//! 6.18): the entries of the "common" ABI keep their x86_64 numbers, the "64"-only entries do
//! not exist, and the "x32" entries 512–547 replace the "64"-only calls that take pointers to
//! structures whose layout differs. Every number has [`X32_SYSCALL_BIT`] set, as
//! `seccomp_data.nr` does for an x32 call (whose `arch` is `AUDIT_ARCH_X86_64`).

use super::X32_SYSCALL_BIT;

/// The x86_64 numbers of the "64" ABI entries: calls an x32 program cannot make under that
/// number (`rt_sigaction` … `pwritev2` have an x32 twin at 512–547; `uselib`, `_sysctl`,
/// `create_module`, `get_kernel_syms`, `query_module`, `nfsservctl`, `set_thread_area`,
/// `get_thread_area`, `epoll_ctl_old`, `epoll_wait_old`, `vserver` and `map_shadow_stack` have
/// none).
const X86_64_ONLY: &[u32] = &[
    13, 15, 16, 19, 20, 45, 46, 47, 54, 55, 59, 101, 127, 128, 129, 131, 134, 156, 174, 177, 178, 180, 205,
    206, 209, 211, 214, 215, 222, 236, 244, 246, 247, 273, 274, 278, 279, 295, 296, 297, 299, 307, 310, 311,
    322, 327, 328, 453,
];

/// The first x32-specific number.
const X32_BASE: u32 = 512;

/// Names of the x32-specific system calls 512, 513, … 547, in number order.
const X32_ONLY: &str = "rt_sigaction rt_sigreturn ioctl readv writev recvfrom sendmsg recvmsg \
execve ptrace rt_sigpending rt_sigtimedwait rt_sigqueueinfo sigaltstack timer_create mq_notify \
kexec_load waitid set_robust_list get_robust_list vmsplice move_pages preadv pwritev \
rt_tgsigqueueinfo recvmmsg sendmmsg process_vm_readv process_vm_writev setsockopt getsockopt \
io_setup io_submit execveat preadv2 pwritev2";

/// Every x32 system call as `(name, number)` with [`X32_SYSCALL_BIT`] set, in number order.
pub fn syscalls() -> impl Iterator<Item = (&'static str, u32)> {
    let common = super::x86_64::syscalls().filter(|(_, nr)| !X86_64_ONLY.contains(nr));
    let own = X32_ONLY.split_whitespace().zip(X32_BASE..);
    common.chain(own).map(|(name, nr)| (name, nr | X32_SYSCALL_BIT))
}

/// The x32 number (with [`X32_SYSCALL_BIT`]) of the system call `name`, or `None` when x32 has
/// no such call.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscalls().find(|(n, _)| *n == name).map(|(_, nr)| nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert_eq!(X32_ONLY.split_whitespace().count(), 36);
        let mut names: Vec<_> = syscalls().map(|(n, _)| n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a name is both common and x32-specific");
        assert!(syscalls().all(|(_, nr)| nr & X32_SYSCALL_BIT != 0));
        // Every "64" entry but the twelve without a twin has one at 512–547.
        let twins = X86_64_ONLY
            .iter()
            .filter_map(|nr| super::super::x86_64::syscalls().find(|(_, n)| n == nr))
            .filter(|(name, _)| syscall_number(name).is_some())
            .count();
        assert_eq!(twins, 36);
        assert_eq!(X86_64_ONLY.len(), 36 + 12);
    }

    #[test]
    fn known_numbers() {
        let x32 = |nr: u32| Some(X32_SYSCALL_BIT | nr);
        assert_eq!(syscall_number("read"), x32(0));
        assert_eq!(syscall_number("write"), x32(1));
        assert_eq!(syscall_number("getpid"), x32(39));
        assert_eq!(syscall_number("clone"), x32(56));
        assert_eq!(syscall_number("keyctl"), x32(250));
        assert_eq!(syscall_number("rt_sigaction"), x32(512));
        assert_eq!(syscall_number("ioctl"), x32(514));
        assert_eq!(syscall_number("execve"), x32(520));
        assert_eq!(syscall_number("ptrace"), x32(521));
        assert_eq!(syscall_number("kexec_load"), x32(528));
        assert_eq!(syscall_number("execveat"), x32(545));
        assert_eq!(syscall_number("pwritev2"), x32(547));
        assert_eq!(syscall_number("uretprobe"), x32(335));
        assert_eq!(syscall_number("clone3"), x32(435));
        assert_eq!(syscall_number("listns"), x32(470));
        for absent in ["uselib", "_sysctl", "set_thread_area", "map_shadow_stack", "socketcall", "mmap2"] {
            assert_eq!(syscall_number(absent), None, "{absent}");
        }
    }
}
