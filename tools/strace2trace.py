#!/usr/bin/env python3
"""Turn an strace log of a program that prints its own /proc/self/maps into a maplevm trace and
the maps Linux produced, for vma/tests/traces.rs.

Capture (the program must read /proc/self/maps and print it to stdout):
    strace -f -qq -e trace=memory,openat,close,read,execve,clone,clone3,fork,vfork,chdir,fchdir -o NAME.strace PROGRAM... > NAME.linux-maps
    python3 tools/strace2trace.py NAME.strace NAME.linux-maps vma/tests/traces/NAME

Writes NAME.trace (the operations up to the read of /proc/self/maps, every result recorded) and
NAME.maps (Linux's maps at that read, kernel mappings such as [stack] and [vdso] left out). The
trace declares each file's device and inode as the maps showed them. Mappings the kernel made
at exec (the program and the dynamic loader) are not in the strace log: they are seeded at the top of the trace as fixed
mappings with their final permissions (a read-only part that Linux keeps apart from an identical
neighbour is seeded writable and then made read-only, as the loader did), so the loader's
mprotect calls on them replay.
"""
import os
import re
import sys

SPECIAL = {"[stack]", "[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"}
CALL = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(\w+)\((.*)\)\s+=\s+(\S+)")


def prot(text):
    bits = text.split("|")
    return ("r" if "PROT_READ" in bits else "-") + ("w" if "PROT_WRITE" in bits else "-") + ("x" if "PROT_EXEC" in bits else "-")


def flags(text, names):
    """The trace's flag words for strace's FLAG|FLAG text: each known name, and any other flag
    of the same family lowercased without its prefix, so that the replay warns about it rather
    than this converter dropping it."""
    out = []
    prefix = "MAP_" if names is MAP else "MREMAP_"
    for bit in text.split("|"):
        name = names.get(bit)
        huge = re.fullmatch(r"(\d+)<<MAP_HUGE_SHIFT", bit)
        if name:
            out.append(name)
        elif huge:
            # A huge page size strace has no name for: its log2.
            out.append(f"huge_shift_{huge.group(1)}")
        elif bit.startswith(prefix):
            out.append(bit[len(prefix):].lower())
    return ",".join(out)


MAP = {"MAP_PRIVATE": "private", "MAP_SHARED": "shared", "MAP_ANONYMOUS": "anonymous", "MAP_FIXED": "fixed",
       "MAP_FIXED_NOREPLACE": "fixed_noreplace", "MAP_GROWSDOWN": "growsdown", "MAP_POPULATE": "populate",
       "MAP_NORESERVE": "noreserve", "MAP_STACK": "stack", "MAP_LOCKED": "locked",
       "MAP_DENYWRITE": "denywrite", "MAP_EXECUTABLE": "executable", "MAP_FILE": "file",
       "MAP_NONBLOCK": "nonblock"}
REMAP = {"MREMAP_MAYMOVE": "maymove", "MREMAP_FIXED": "fixed"}


def num(text):
    return 0 if text == "NULL" else int(text, 0)


def result(text):
    return text if not text.startswith("-1") else text


UNFINISHED = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(\w+)\((.*) <unfinished \.\.\.>$")
RESUMED = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?<\.\.\. (\w+) resumed>(.*)$")


def joined(log_lines):
    """The log with each call that strace split across threads (`<unfinished ...>`, then
    `<... NAME resumed>`) put back on one line, where it finished."""
    pending, out = {}, []
    for line in log_lines:
        m = UNFINISHED.match(line)
        if m:
            pending[m.group(1) or m.group(2)] = (m.group(3), m.group(4))
            continue
        m = RESUMED.match(line)
        if m:
            pid = m.group(1) or m.group(2)
            name, head = pending.pop(pid, (m.group(3), ""))
            out.append(f"{pid} {name}({head}{m.group(4)}")
            continue
        out.append(line)
    return out


def own_lines(log_lines, program):
    """The calls of the process running `program` that read /proc/self/maps, all its threads,
    from its last execve on, in the order they finished. Threads are told from processes by
    clone's CLONE_THREAD."""
    raw = [(m.group(1) or m.group(2) or "", m.group(3), m.group(4), m.group(5), line)
           for line in joined(log_lines) for m in [CALL.match(line)] if m]
    # A thread's first calls may be logged before clone returns in its creator: map first.
    process = {}
    for pid, name, args, ret, _ in raw:
        if name in ("clone", "clone3", "fork", "vfork") and ret.isdigit():
            process[ret] = process.get(pid, pid) if "CLONE_THREAD" in args else ret
    calls = [(process.get(pid, pid), name, args, ret, line) for pid, name, args, ret, line in raw]
    # The reader: of the processes that read their maps, the one running `program` (the
    # executable the captured maps show first; a compiler's linker may read its maps too).
    readers = [pid for pid, name, args, ret, _ in calls if name == "openat" and '"/proc/self/maps"' in args]
    ran = {pid: os.path.realpath(re.search(r'"([^"]*)"', args).group(1))
           for pid, name, args, ret, _ in calls if name == "execve" and ret == "0"}
    reader = next((pid for pid in reversed(readers) if ran.get(pid) == program), readers[-1])
    mine = [c for c in calls if c[0] == reader]
    start = max((i for i, c in enumerate(mine) if c[1] == "execve" and c[3] == "0"), default=-1) + 1
    # The program prints its maps at the end: the last open of /proc/self/maps is that read's
    # (a runtime may read its maps earlier, as node does at start).
    last_open = max(i for i, c in enumerate(mine) if c[1] == "openat" and '"/proc/self/maps"' in c[2])
    return [c for i, c in enumerate(mine[start:], start) if not (c[1] == "openat" and i < last_open
                                                                  and '"/proc/self/maps"' in c[2])]


def convert(log_lines, program):
    fds, ops, created, cwd = {}, [], [], os.getcwd()
    for _, name, args, ret, line in own_lines(log_lines, program):
        if name == "openat":
            path = re.search(r'"([^"]*)"', args).group(1)
            if ret.startswith("-"):
                continue
            directory = args.split(",")[0].strip()
            if path == "/proc/self/maps":
                fds[int(ret)] = "MAPS"
            elif directory.isdigit() and int(directory) in fds:
                fds[int(ret)] = os.path.realpath(os.path.join(fds[int(directory)], path))
            else:
                fds[int(ret)] = os.path.realpath(os.path.join(cwd, path))
            continue
        if name in ("chdir", "fchdir"):
            # The JVM opens its perf data file relative to a directory it changed into.
            if ret == "0":
                target = re.search(r'"([^"]*)"', args)
                cwd = os.path.join(cwd, target.group(1)) if target else fds.get(int(args), cwd)
            continue
        if name == "read":
            if fds.get(int(args.split(",")[0])) == "MAPS":
                break
            continue
        if name == "close":
            fds.pop(int(args), None)
            continue
        parts = [a.strip() for a in args.split(",")]
        failed = line.rstrip().split("=")[-1].strip().startswith("-1")
        err = None
        if failed:
            err = "-" + line.split("=")[-1].split()[1]
        if name == "brk":
            addr = num(parts[0])
            if addr == 0:
                if not any(op.startswith("heap") for op in ops):
                    ops.append(f"heap {ret}")
                continue
            ops.append(f"brk {parts[0]} -> {ret}")
        elif name == "mmap":
            addr, length, p, f, fd, off = parts
            fl = flags(f, MAP)
            outcome = err or ret
            if "anonymous" in fl or int(fd) < 0:
                ops.append(f"mmap {num(addr):#x} {length} {prot(p)} {fl} -> {outcome}")
            else:
                ops.append(f"mmap {num(addr):#x} {length} {prot(p)} {fl} {fds[int(fd)]} {off} -> {outcome}")
            if not failed:
                created.append((int(ret, 16), int(ret, 16) + int(length)))
        elif name == "munmap":
            ops.append(f"munmap {parts[0]} {parts[1]}")
        elif name == "mprotect":
            ops.append(f"mprotect {parts[0]} {parts[1]} {prot(parts[2])}")
        elif name == "mremap":
            fl = flags(parts[3], REMAP)
            extra = f" {parts[4]}" if len(parts) > 4 else ""
            ops.append(f"mremap {parts[0]} {parts[1]} {parts[2]} {fl}{extra} -> {err or ret}")
            if not failed:
                created.append((int(ret, 16), int(ret, 16) + int(parts[2])))
    return ops, created


def maps(lines):
    """The mappings of /proc/PID/maps lines, kernel mappings left out: (start, end, perms,
    offset, path, device, inode, the line as printed)."""
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        rng, perms, offset, device, inode = fields[:5]
        path = " ".join(fields[5:])
        if path in SPECIAL:
            continue
        start, end = (int(x, 16) for x in rng.split("-"))
        out.append((start, end, perms, int(offset, 16), path, device, inode, line))
    return out


def main():
    log, linux_maps, out = sys.argv[1:4]
    vmas = maps(open(linux_maps).read().splitlines())
    program = next(path for _, _, _, _, path, _, _, _ in vmas if path.startswith("/"))
    ops, created = convert(open(log).read().splitlines(), program)
    # Each file's device and inode, as the maps showed them (shared anonymous memory gets its
    # own in each replay).
    files = sorted({f"file {path} {device} {inode}" for _, _, _, _, path, device, inode, _ in vmas
                    if path.startswith("/") and not path.endswith(" (deleted)")})
    seeds = []
    previous = None
    for start, end, perms, offset, path, _, _, _ in vmas:
        if path == "[heap]" or any(s < end and start < e for s, e in created):
            previous = None
            continue
        sharing = "shared" if perms[3] == "s" else "private"
        kind = f"{sharing},fixed {path} {offset:#x}" if path else f"{sharing},anonymous,fixed"
        # Linux kept this apart from an identical-looking neighbour: it was mapped writable and
        # made read-only later (it stays charged, VM_ACCOUNT). Seed it that way.
        mergeable = previous is not None and previous[1] == start and previous[2] == perms and previous[4] == path \
            and previous[3] + (previous[1] - previous[0]) == offset
        if mergeable and sharing == "private" and "w" not in perms:
            seeds.append(f"mmap {start:#x} {end - start:#x} {perms[0]}w{perms[2]} {kind}")
            seeds.append(f"mprotect {start:#x} {end - start:#x} {perms[:3]}")
        else:
            seeds.append(f"mmap {start:#x} {end - start:#x} {perms[:3]} {kind}")
        previous = (start, end, perms, offset, path)
    with open(out + ".trace", "w") as f:
        f.write(f"# {os.path.basename(out)}: captured with strace from a real process (see tools/strace2trace.py)\n")
        f.write("# the files' devices and inodes:\n" + "\n".join(files) + "\n")
        f.write("# mappings the kernel made at exec, with their final permissions:\n")
        f.write("\n".join(seeds) + "\n# the traced operations:\n" + "\n".join(ops) + "\n")
    with open(out + ".maps", "w") as f:
        for vma in vmas:
            f.write(vma[-1] + "\n")


if __name__ == "__main__":
    main()
