#!/usr/bin/env bash
# Fuzz/run.sh SECONDS TARGET...: runs each libFuzzer target (.build/fuzz/TARGET-fuzz, built by
# `make fuzz-build`) for SECONDS on its committed corpus (Fuzz/corpus/TARGET, and the crash
# regressions in Fuzz/regressions/TARGET) plus what it found before (.build/fuzz/TARGET, not
# committed). Every target runs even after another crashed; the crashing inputs' paths are
# printed, with a table of executions per second, total runs and coverage per target; the exit
# status is 1 if any target crashed (or did not run).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=$1
shift
fuzz=.build/fuzz
# The Swift runtime's backtracer and AddressSanitizer fight over a crash: libFuzzer reports it.
export SWIFT_BACKTRACE=enable=no
declare -A max_len=([toml]=8192 [json]=8192 [config]=16384 [registers]=512 [modbus]=1024 [buffer]=16384 [simchip]=4096)
failed=()
summary=()
for target in "$@"; do
    mkdir -p "$fuzz/$target" "$fuzz/crashes"
    log="$fuzz/$target.log"
    corpora=("$fuzz/$target" "Fuzz/corpus/$target")
    [ -d "Fuzz/regressions/$target" ] && corpora+=("Fuzz/regressions/$target")
    echo "== $target-fuzz: $seconds s"
    start=$(date +%s)
    "$fuzz/$target-fuzz" -max_total_time="$seconds" -max_len="${max_len[$target]:-8192}" -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$fuzz/crashes/$target-" "${corpora[@]}" \
        >"$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    features=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    summary+=("$(printf '%-10s %8s s %10s runs %8s exec/s  cov %6s  ft %6s  exit %s' "$target" "$elapsed" \
        "${runs:-?}" "${rate:-?}" "${cov:-?}" "${features:-?}" "$status")")
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "!! $target-fuzz failed (exit $status); its log: $log"
        grep -E 'ERROR|Fatal error|SUMMARY|==[0-9]+==' "$log" | head -20
        for input in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "!! crashing input: $input  (reproduce: $fuzz/$target-fuzz $input)"
        done
    fi
done
echo "== fuzz summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "!! crashed: ${failed[*]}"
    exit 1
fi
