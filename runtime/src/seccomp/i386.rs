//! The i386 system call table: every name in the kernel's
//! `arch/x86/entry/syscalls/syscall_32.tbl` (Linux 6.18, last entry `listns` = 470). These are
//! the numbers a 32-bit program uses through `int $0x80` (or `sysenter`) on an x86_64 kernel
//! with IA32 emulation; the filter sees them with `seccomp_data.arch` = `AUDIT_ARCH_I386`.
//! Entries the kernel never implemented or dropped (`break`, `stty`, `afs_syscall`, …) keep
//! their numbers, as libseccomp's table does; numbers the table leaves unused are `-` below.

/// Names of system calls 0, 1, 2, … 423, in number order (`-`: unused number).
const LOW: &str = "restart_syscall exit fork read write open close waitpid creat link unlink \
execve chdir time mknod chmod lchown break oldstat lseek getpid mount umount setuid getuid stime \
ptrace alarm oldfstat pause utime stty gtty access nice ftime sync kill rename mkdir rmdir dup \
pipe times prof brk setgid getgid signal geteuid getegid acct umount2 lock ioctl fcntl mpx \
setpgid ulimit oldolduname umask chroot ustat dup2 getppid getpgrp setsid sigaction sgetmask \
ssetmask setreuid setregid sigsuspend sigpending sethostname setrlimit getrlimit getrusage \
gettimeofday settimeofday getgroups setgroups select symlink oldlstat readlink uselib swapon \
reboot readdir mmap munmap truncate ftruncate fchmod fchown getpriority setpriority profil \
statfs fstatfs ioperm socketcall syslog setitimer getitimer stat lstat fstat olduname iopl \
vhangup idle vm86old wait4 swapoff sysinfo ipc fsync sigreturn clone setdomainname uname \
modify_ldt adjtimex mprotect sigprocmask create_module init_module delete_module \
get_kernel_syms quotactl getpgid fchdir bdflush sysfs personality afs_syscall setfsuid setfsgid \
_llseek getdents _newselect flock msync readv writev getsid fdatasync _sysctl mlock munlock \
mlockall munlockall sched_setparam sched_getparam sched_setscheduler sched_getscheduler \
sched_yield sched_get_priority_max sched_get_priority_min sched_rr_get_interval nanosleep mremap \
setresuid getresuid vm86 query_module poll nfsservctl setresgid getresgid prctl rt_sigreturn \
rt_sigaction rt_sigprocmask rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend pread64 \
pwrite64 chown getcwd capget capset sigaltstack sendfile getpmsg putpmsg vfork ugetrlimit mmap2 \
truncate64 ftruncate64 stat64 lstat64 fstat64 lchown32 getuid32 getgid32 geteuid32 getegid32 \
setreuid32 setregid32 getgroups32 setgroups32 fchown32 setresuid32 getresuid32 setresgid32 \
getresgid32 chown32 setuid32 setgid32 setfsuid32 setfsgid32 pivot_root mincore madvise \
getdents64 fcntl64 - - gettid readahead setxattr lsetxattr fsetxattr getxattr lgetxattr \
fgetxattr listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr tkill sendfile64 \
futex sched_setaffinity sched_getaffinity set_thread_area get_thread_area io_setup io_destroy \
io_getevents io_submit io_cancel fadvise64 - exit_group lookup_dcookie epoll_create epoll_ctl \
epoll_wait remap_file_pages set_tid_address timer_create timer_settime timer_gettime \
timer_getoverrun timer_delete clock_settime clock_gettime clock_getres clock_nanosleep statfs64 \
fstatfs64 tgkill utimes fadvise64_64 vserver mbind get_mempolicy set_mempolicy mq_open mq_unlink \
mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid - add_key request_key \
keyctl ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat \
mkdirat mknodat fchownat futimesat fstatat64 unlinkat renameat linkat symlinkat readlinkat \
fchmodat faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice sync_file_range \
tee vmsplice move_pages getcpu epoll_pwait utimensat signalfd timerfd_create eventfd fallocate \
timerfd_settime timerfd_gettime signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv \
pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64 \
name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns process_vm_readv \
process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp getrandom \
memfd_create bpf execveat socket socketpair bind connect listen accept4 getsockopt setsockopt \
getsockname getpeername sendto sendmsg recvfrom recvmsg shutdown userfaultfd membarrier mlock2 \
copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free statx arch_prctl \
io_pgetevents rseq - - - - - - semget semctl shmget shmctl shmat shmdt msgget msgsnd msgrcv \
msgctl clock_gettime64 clock_settime64 clock_adjtime64 clock_getres_time64 \
clock_nanosleep_time64 timer_gettime64 timer_settime64 timerfd_gettime64 timerfd_settime64 \
utimensat_time64 pselect6_time64 ppoll_time64 - io_pgetevents_time64 recvmmsg_time64 \
mq_timedsend_time64 mq_timedreceive_time64 semtimedop_time64 rt_sigtimedwait_time64 \
futex_time64 sched_rr_get_interval_time64";

/// Every i386 system call as `(name, number)`, in number order. From 424 on (`pidfd_send_signal`
/// … `listns`) every architecture shares one numbering, so those come from the x86_64 table.
pub fn syscalls() -> impl Iterator<Item = (&'static str, u32)> {
    let low = LOW.split_whitespace().zip(0u32..).filter(|(n, _)| *n != "-");
    low.chain(super::x86_64::unified())
}

/// The i386 number of the system call `name`, or `None` when i386 has no such call.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscalls().find(|(n, _)| *n == name).map(|(_, nr)| nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert_eq!(LOW.split_whitespace().count(), 424);
        assert_eq!(syscalls().last(), Some(("listns", 470)));
        let mut names: Vec<_> = syscalls().map(|(n, _)| n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate name in the table");
        // The unused numbers of syscall_32.tbl.
        for nr in [222, 223, 251, 285, 387, 388, 389, 390, 391, 392, 415] {
            assert!(syscalls().all(|(_, n)| n != nr), "{nr} should be unused");
        }
    }

    #[test]
    fn known_numbers() {
        for (name, nr) in [
            ("restart_syscall", 0),
            ("exit", 1),
            ("read", 3),
            ("write", 4),
            ("execve", 11),
            ("getpid", 20),
            ("getppid", 64),
            ("socketcall", 102),
            ("clone", 120),
            ("modify_ldt", 123),
            ("personality", 136),
            ("mmap2", 192),
            ("getuid32", 199),
            ("fcntl64", 221),
            ("gettid", 224),
            ("exit_group", 252),
            ("add_key", 286),
            ("request_key", 287),
            ("keyctl", 288),
            ("unshare", 310),
            ("open_by_handle_at", 342),
            ("setns", 346),
            ("seccomp", 354),
            ("socket", 359),
            ("arch_prctl", 384),
            ("rseq", 386),
            ("semget", 393),
            ("ppoll_time64", 414),
            ("io_pgetevents_time64", 416),
            ("sched_rr_get_interval_time64", 423),
            ("pidfd_send_signal", 424),
            ("clone3", 435),
            ("quotactl_fd", 443),
            ("map_shadow_stack", 453),
            ("mseal", 462),
            ("listns", 470),
        ] {
            assert_eq!(syscall_number(name), Some(nr), "{name}");
        }
        for absent in ["arch_prctl_64", "newfstatat", "socket_64", "kexec_file_load", "uprobe", "-"] {
            assert_eq!(syscall_number(absent), None, "{absent}");
        }
    }
}
