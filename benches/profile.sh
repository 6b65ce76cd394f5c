#!/usr/bin/env bash
# Where a handshake against a real OTP node spends its time, written to benches/profiles/:
#
#   timeline.md        wall time per step of one serial handshake (EPMD lookup, connect,
#                      each wait for the acceptor, our own steps, the close)
#   cpu_split.txt      CPU per handshake: this process (getrusage, user and system) against
#                      the OTP acceptor and epmd (/proc), for our initiator and erl_dist's
#   callgrind_*.txt    user-space instructions of our initiator per handshake
#                      (valgrind --tool=callgrind: two runs of different lengths, the
#                      difference divided by the extra handshakes), with the top functions
#
# Run benches/run.sh (or `cargo bench --features etcd --no-run`) first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benches/profiles
mkdir -p "$out"
bin=$(ls -t target/release/deps/handshake_otp-* | grep -v '\.d$' | head -1 || true)
say() { printf '[profile %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ "${1:-}" != --callgrind-only ]; then
say "timeline ($bin)"
BENCH_PROFILE=timeline BENCH_PROFILE_OPS=2000 "$bin" --bench > "$out/timeline.md"

say "CPU split"
: > "$out/cpu_split.txt"
for which in ours_cached ours_cold erl_dist_known_port erl_dist_cold; do
    BENCH_PROFILE=$which BENCH_PROFILE_OPS=2000 "$bin" --bench 2>&1 | grep 'profile ' >> "$out/cpu_split.txt"
done

fi

for which in ours_cached erl_dist_known_port; do
    say "callgrind: $which"
    for ops in 100 400; do
        BENCH_PROFILE=$which BENCH_PROFILE_OPS=$ops valgrind --tool=callgrind \
            --callgrind-out-file="/tmp/callgrind.$which.$ops" "$bin" --bench 2>/dev/null >/dev/null
    done
    total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' || true; }
    a=$(total "/tmp/callgrind.$which.100")
    b=$(total "/tmp/callgrind.$which.400")
    {
        echo "$which: $a instructions for 100 handshakes (with start-up), $b for 400"
        echo "per handshake: $(( (b - a) / 300 )) instructions (user space, this process)"
        echo
        echo "Top functions of the 400-handshake run (inclusive of start-up):"
        callgrind_annotate "/tmp/callgrind.$which.400" 2>/dev/null | sed -n '/^Ir/,$p' | head -40 || true
    } > "$out/callgrind_$which.txt"
done
say "done: $out/"
