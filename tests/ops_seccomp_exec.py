#!/usr/bin/python3
"""Runs a program under a seccomp profile in Docker's JSON format, as a container runtime would
(used by tests/ops_container.rs; needs Debian's python3-seccomp, libseccomp's own binding).

usage: ops_seccomp_exec.py PROFILE [--deny NAME,NAME] [--errno N] -- PROGRAM ARGS...

--deny takes system calls out of the allowed ones (io_uring_* gives Docker's default profile
as it is since 2023); --errno sets the answer of everything not allowed (1 EPERM: Docker's;
38 ENOSYS: podman's). Calls this libseccomp does not know are skipped, as runtimes skip them.
"""
import json
import os
import sys

import seccomp


def main():
    args = sys.argv[1:]
    split = args.index("--")
    options, program = args[:split], args[split + 1:]
    profile = json.load(open(options[0]))
    deny = set()
    errno = profile.get("defaultErrnoRet", 1)
    rest = options[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--deny":
            deny |= set(value.split(","))
        elif flag == "--errno":
            errno = int(value)
        else:
            sys.exit(f"unknown option {flag}")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO", "only allowlists are supported"
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno))
    ops = {"SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ, "SCMP_CMP_EQ": seccomp.EQ}
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            action = seccomp.ALLOW
        elif rule["action"] == "SCMP_ACT_ERRNO":
            action = seccomp.ERRNO(rule.get("errnoRet", errno))
        else:
            sys.exit(f"unsupported action {rule['action']}")
        conditions = [
            seccomp.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in rule.get("args", [])
        ]
        for name in rule["names"]:
            if name in deny:
                continue
            try:
                rules.add_rule(action, name, *conditions)
            except (RuntimeError, ValueError, OSError):
                pass  # unknown to this libseccomp: skipped, like a runtime does
    rules.load()
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
