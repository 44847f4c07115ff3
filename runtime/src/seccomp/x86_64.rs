//! The x86_64 system call table: every name in the kernel's `arch/x86/entry/syscalls/syscall_64.tbl`
//! (Linux 6.18, last entry `listns` = 470), with the "common" and "64" ABIs. The x32 ABI
//! ("common" plus the x32-only entries 512–547, with `__X32_SYSCALL_BIT` set) is derived from
//! it in `x32.rs`. Entries the kernel no longer implements (`uselib`,
//! `create_module`, …) keep their numbers, as libseccomp's table does.

/// Names of system calls 0, 1, 2, … 336, in number order (a name's position is its number).
const LOW: &str = "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk \
rt_sigaction rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select \
sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep getitimer \
alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg recvmsg shutdown \
bind listen getsockname getpeername socketpair setsockopt getsockopt clone fork vfork execve exit \
wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync \
fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink \
symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo \
times ptrace getuid syslog getgid setuid setgid geteuid getegid setpgid getppid getpgrp setsid \
setreuid setregid getgroups setgroups setresuid getresuid setresgid getresgid getpgid setfsuid \
setfsgid getsid capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend \
sigaltstack utime mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority \
sched_setparam sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max \
sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall vhangup modify_ldt \
pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot sync acct settimeofday mount \
umount2 swapon swapoff reboot sethostname setdomainname iopl ioperm create_module init_module \
delete_module get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg afs_syscall \
tuxcall security gettid readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr \
listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time futex \
sched_setaffinity sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit \
io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old \
remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 timer_create \
timer_settime timer_gettime timer_getoverrun timer_delete clock_settime clock_gettime \
clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes vserver mbind \
set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify \
mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set ioprio_get inotify_init \
inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat \
newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll \
unshare set_robust_list get_robust_list splice tee sync_file_range vmsplice move_pages utimensat \
epoll_pwait signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4 \
signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo \
perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at \
open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv process_vm_writev \
kcmp finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create \
kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2 \
pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq uretprobe uprobe";

/// Number of the first name in [`HIGH`]: the kernel leaves 337–423 unused on x86_64.
const HIGH_BASE: u32 = 424;

/// Names of system calls 424, 425, … 470, in number order.
const HIGH: &str = "pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree \
move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd \
faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd landlock_create_ruleset \
landlock_add_rule landlock_restrict_self memfd_secret process_mrelease futex_waitv \
set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack futex_wake futex_wait futex_requeue \
statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat \
getxattrat listxattrat removexattrat open_tree_attr file_getattr file_setattr listns";

/// Every x86_64 system call as `(name, number)`, in number order.
pub fn syscalls() -> impl Iterator<Item = (&'static str, u32)> {
    LOW.split_whitespace().zip(0u32..).chain(unified())
}

/// System calls 424–470: since `pidfd_send_signal` every architecture uses the same number
/// for a new call, so this part of the table is also i386's (and, x32-bit set, x32's).
pub(super) fn unified() -> impl Iterator<Item = (&'static str, u32)> {
    HIGH.split_whitespace().zip(HIGH_BASE..)
}

/// The x86_64 number of the system call `name`, or `None` when x86_64 has no such call (it may
/// exist on another architecture, e.g. `socketcall` or `mmap2`, or nowhere at all).
pub fn syscall_number(name: &str) -> Option<u32> {
    syscalls().find(|(n, _)| *n == name).map(|(_, nr)| nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert_eq!(LOW.split_whitespace().count(), 337);
        assert_eq!(HIGH.split_whitespace().count(), 47);
        let mut names: Vec<_> = syscalls().map(|(n, _)| n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate name in the table");
    }

    #[test]
    fn known_numbers() {
        for (name, nr) in [
            ("read", 0),
            ("write", 1),
            ("socket", 41),
            ("clone", 56),
            ("uname", 63),
            ("getppid", 110),
            ("personality", 135),
            ("reboot", 169),
            ("init_module", 175),
            ("kexec_load", 246),
            ("keyctl", 250),
            ("unshare", 272),
            ("open_by_handle_at", 304),
            ("seccomp", 317),
            ("rseq", 334),
            ("pidfd_send_signal", 424),
            ("clone3", 435),
            ("futex_waitv", 449),
            ("mseal", 462),
            ("listns", 470),
        ] {
            assert_eq!(syscall_number(name), Some(nr), "{name}");
        }
        assert_eq!(syscall_number("socketcall"), None);
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn agrees_with_libc() {
        for (name, nr) in [
            ("getpid", libc::SYS_getpid),
            ("execveat", libc::SYS_execveat),
            ("statx", libc::SYS_statx),
            ("close_range", libc::SYS_close_range),
            ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
            ("fchmodat2", libc::SYS_fchmodat2),
            ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
        ] {
            assert_eq!(syscall_number(name).map(i64::from), Some(nr), "{name}");
        }
    }
}
