#!/usr/bin/env python3
"""Writes deploy/seccomp-io_uring.json: a seccomp profile in Docker's (OCI) format that follows
Docker's default profile -- every system call allowed except those the default profile blocks
(the table "Significant syscalls blocked by the default profile" of Docker's seccomp
documentation, plus the newer ones only CAP_SYS_ADMIN or CAP_SYS_PTRACE may use) -- and that,
unlike Docker's default since 2023, allows io_uring_setup, io_uring_enter and io_uring_register,
which mllpd's shards and journal need.

Like the default profile: clone is allowed only without namespace flags, clone3 answers ENOSYS
(so the C library falls back to clone), every other call answers EPERM.

The list of system calls is the x86-64 kernel's (asm/unistd_64.h of linux-libc-dev), so a
rerun on newer headers adds the calls added since. Usage: python3 deploy/seccomp/generate.py
"""
import json
import re
import sys
from pathlib import Path

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
OUT = Path(__file__).resolve().parent.parent / "seccomp-io_uring.json"

# Blocked, as in Docker's default profile (its documentation explains each): kernel modules,
# keyrings, clocks, mounts and namespaces, tracing other processes, NUMA policy, BPF, perf,
# reboot, swap, quotas, and obsolete calls.
BLOCKED = {
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "get_mempolicy", "init_module",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mbind", "mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "perf_event_open", "personality", "pivot_root", "process_vm_readv", "process_vm_writev",
    "ptrace", "query_module", "quotactl", "reboot", "request_key", "set_mempolicy", "setns",
    "settimeofday", "swapon", "swapoff", "sysfs", "_sysctl", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old", "stime", "umount",
    # Gated by CAP_SYS_ADMIN / CAP_SYS_PTRACE / CAP_SYS_CHROOT / CAP_SYSLOG in Docker's profile
    # (a container with all capabilities dropped has no use for them).
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "quotactl_fd", "pidfd_getfd", "process_madvise", "fanotify_init", "lookup_dcookie",
    "sethostname", "setdomainname", "chroot", "syslog", "vhangup", "set_mempolicy_home_node",
    "listmount", "statmount", "clone3", "clone", "afs_syscall", "tuxcall", "security",
    "getpmsg", "putpmsg", "epoll_ctl_old", "epoll_wait_old", "create_module",
}

# Namespace flags of clone: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
CLONE_NAMESPACE_FLAGS = 0x7E020000
IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]


def kernel_syscalls():
    text = HEADER.read_text()
    return sorted(set(re.findall(r"#define __NR_(\w+)\s+\d+", text)))


def main():
    calls = kernel_syscalls()
    missing = [c for c in IO_URING if c not in calls]
    if missing:
        sys.exit(f"{HEADER} lacks {missing}: headers older than Linux 5.1")
    allowed = [c for c in calls if c not in BLOCKED]
    profile = {
        "comment": "mllpd: Docker's default seccomp profile plus io_uring "
                   "(written by deploy/seccomp/generate.py; see README, Container)",
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }
    OUT.write_text(json.dumps(profile, indent=2) + "\n")
    print(f"{OUT}: {len(allowed)} calls allowed (io_uring included), "
          f"{len([c for c in calls if c in BLOCKED])} blocked")


if __name__ == "__main__":
    main()
