#!/bin/sh
# Captures the traces in vma/tests/traces from real programs: each is run under strace, prints
# its own /proc/self/maps, and tools/strace2trace.py turns the log into NAME.trace and NAME.maps.
# Usage: tools/capture/capture.sh [NAME...]   (default: every capture below; needs strace and
# the programs: cat, python3, java, node, rustc, gcc)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../../vma/tests/traces
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

capture() {
    name=$1
    shift
    strace -f -qq -e trace=memory,openat,close,read,execve,clone,clone3,fork,vfork,chdir,fchdir \
        -o "$work/$name.strace" "$@" > "$work/$name.linux-maps"
    python3 "$here/../strace2trace.py" "$work/$name.strace" "$work/$name.linux-maps" "$out/$name"
    echo "$name: $(grep -vc '^#' "$out/$name.trace") operations, $(wc -l < "$out/$name.maps") mappings"
}

run() {
    case $1 in
    cat) capture cat cat /proc/self/maps ;;
    python) capture python python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 20); m.resize(4 << 20); print(open("/proc/self/maps").read(), end="")' ;;
    python-threads) capture python-threads python3 -c '
import threading
def work(n):
    blocks = [bytearray(1 << 16) for _ in range(64)]
    big = bytearray(8 << 20)
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(open("/proc/self/maps").read(), end="")' ;;
    java) capture java java -Xmx256m "$here/Maps.java" ;;
    node) capture node node -e 'process.stdout.write(require("fs").readFileSync("/proc/self/maps"))' ;;
    rustc)
        # The compiler prints its own maps while expanding a procedural macro.
        rustc --edition 2021 --crate-type proc-macro "$here/maps_macro.rs" -o "$work/libmaps_macro.so"
        capture rustc rustc --edition 2021 --extern "maps_macro=$work/libmaps_macro.so" \
            "$here/rustc_main.rs" -o "$work/main" ;;
    alloc-threads)
        gcc -O1 -pthread -o "$work/alloc-threads" "$here/alloc_threads.c"
        capture alloc-threads "$work/alloc-threads" ;;
    *) echo "unknown capture $1" >&2; exit 2 ;;
    esac
}

if [ $# -eq 0 ]; then
    set -- cat python python-threads java node rustc alloc-threads
fi
for name in "$@"; do run "$name"; done
