#!/bin/sh
# What a release binary weighs, stripped, and what makes it up: sections (size -A), the
# shared libraries it still needs (the C libraries: libmodbus, libmosquitto, libgpiod, zlib),
# and its code and data by origin, from the unstripped binary's symbol sizes (nm -S): each Swift
# module by its mangled prefix ($s<len><Module>), the Swift standard library and runtime, the
# rest (C and C++ runtime pieces linked statically).
# Usage: Packaging/release-size.sh [BINARY...]   (default .build/release/railgate and railgate-sim)
set -eu
[ $# -gt 0 ] || set -- .build/release/railgate .build/release/railgate-sim
for binary in "$@"; do
    [ -x "$binary" ] || { echo "no $binary: run make release first" >&2; exit 1; }
    stripped=$(mktemp)
    strip --strip-unneeded -o "$stripped" "$binary"
    built=$(stat -c %s "$binary"); small=$(stat -c %s "$stripped")
    echo "== $(basename "$binary"): $(numfmt --to=iec-i --suffix=B --format=%.2f "$small") stripped ($small bytes; $(numfmt --to=iec-i --suffix=B --format=%.2f "$built") as built)"
    echo "-- sections (stripped, bytes):"
    size -A "$stripped" | awk '$2 ~ /^[0-9]+$/ && $2 > 4096 { printf "  %-24s %10d\n", $1, $2 }'
    echo "-- shared libraries still needed:"
    objdump -p "$stripped" | awk '/NEEDED/ { printf "  %s\n", $2 }'
    echo "-- code and data by origin (symbol sizes, bytes; the rest is metadata, tables, padding):"
    nm -S -t d --size-sort "$binary" 2>/dev/null | awk '
        NF >= 4 {
            size = $2 + 0; name = $4; origin = "C/C++ and other"
            if (name ~ /^\$ss/ || name ~ /^swift_/ || name ~ /^_swift/ || name ~ /^\$sS/) origin = "Swift stdlib and runtime"
            else if (match(name, /^\$s[0-9]+/)) {
                digits = substr(name, 3, RLENGTH - 2); origin = "Swift " substr(name, RLENGTH + 1, digits + 0)
            }
            total[origin] += size
        }
        END {
            for (o in total) if (total[o] >= 4096) printf "%10d  %s\n", total[o], o; else small += total[o]
            printf "%10d  %s\n", small, "Swift generic and associated-type symbols (< 4 KiB a name)"
        }' | sort -rn | sed 's/^/  /'
    rm -f "$stripped"
done
