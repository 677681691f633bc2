"""A seccomp filter for the code interpreter's sandbox: no namespaces and no mounts from inside.

Without it a program could make a user namespace of its own (where it is root) and mount a tmpfs
there, beyond the sandbox's size limits. The filter refuses (EPERM) unshare, setns, clone with any
namespace flag, mount and the new mount API, umount, pivot_root and chroot; clone3 gets ENOSYS (its
flags are in memory a filter cannot read), so the C library falls back to clone, which is checked.
Syscalls of another ABI (32-bit compat, x32) are refused whole.

It is a classic BPF program in the layout bubblewrap's `--seccomp FD` reads (struct sock_filter:
u16 code, u8 jt, u8 jf, u32 k), built here for x86_64 and aarch64.
"""

from __future__ import annotations

import errno
import platform
import struct
from typing import Dict, List, Optional, Tuple

_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_ARCH_OFFSET, _NR_OFFSET, _ARG0_OFFSET = 4, 0, 16  # struct seccomp_data (args little-endian)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
# arch: (AUDIT_ARCH, clone, clone3, denied syscall numbers)
_SHARED = [428, 429, 430, 431, 432, 433, 442]  # open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr
_TABLE: Dict[str, Tuple[int, int, int, List[int]]] = {
    # unshare, setns, mount, umount2, pivot_root, chroot
    "x86_64": (0xC000003E, 56, 435, [272, 308, 165, 166, 155, 161] + _SHARED),
    "aarch64": (0xC00000B7, 220, 435, [97, 268, 40, 39, 41, 51] + _SHARED),
}
_X32_BIT = 0x40000000


def namespace_filter(machine: Optional[str] = None) -> Optional[bytes]:
    """The filter for this machine's architecture, or None where it is not known."""
    entry = _TABLE.get(machine or platform.machine())
    if entry is None:
        return None
    arch, clone, clone3, denied = entry
    # instructions as (code, jt label or None, jf label or None, k); labels resolve to the returns
    prog: List[Tuple[int, object, object, int]] = [(_LD_ABS_W, None, None, _ARCH_OFFSET),
                                                    (_JEQ, None, "eperm", arch),
                                                    (_LD_ABS_W, None, None, _NR_OFFSET)]
    if arch == 0xC000003E:
        prog.append((_JGE, "eperm", None, _X32_BIT))
    prog += [(_JEQ, "eperm", None, nr) for nr in denied]
    prog.append((_JEQ, "enosys", None, clone3))
    prog.append((_JEQ, None, "allow", clone))
    prog += [(_LD_ABS_W, None, None, _ARG0_OFFSET), (_JSET, "eperm", "allow", NAMESPACE_FLAGS)]
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2}
    prog += [(_RET, None, None, _ALLOW), (_RET, None, None, _ERRNO | errno.EPERM), (_RET, None, None, _ERRNO | errno.ENOSYS)]
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        off = lambda label: 0 if label is None else labels[label] - (i + 1)
        out += struct.pack("<HBBI", code, off(jt), off(jf), k)
    return bytes(out)
