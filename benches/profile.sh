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
#   epmd.md            an EPMD lookup, embedded server against the real epmd: CPU per
#                      lookup on both sides (user and system), the servers' system calls
#                      per lookup (perf, when installed) and user-space instructions per
#                      lookup (callgrind), with the request there at the accept or late
#
# Run benches/run.sh (or `cargo bench --features etcd --no-run`) first.
# `benches/profile.sh --epmd-only` writes epmd.md alone.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benches/profiles
mkdir -p "$out"
bin=$(ls -t target/release/deps/handshake_otp-* | grep -v '\.d$' | head -1 || true)
say() { printf '[profile %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

epmd_profile() {
    local bench server md
    bench=$(ls -t target/release/deps/epmd-* | grep -v '\.d$' | head -1)
    server=target/release/examples/epmd_server
    md="$out/epmd.md"
    # Below the ephemeral range (32768 and up by default), which the lookups'
    # connections in TIME_WAIT fill.
    free_port() {
        local p
        while :; do
            p=$((20000 + RANDOM % 12000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    }
    # start WHICH PORT [WRAPPER...]: the server in the background, on CPU 1.
    start() {
        local which=$1 port=$2
        shift 2
        if [ "$which" = epmd ]; then
            taskset -c 1 "$@" epmd -port "$port" > /dev/null 2>&1 &
        else
            taskset -c 1 "$@" "$server" --port "$port" --bind 127.0.0.1 > /dev/null 2>&1 &
        fi
        server_pid=$!
        for _ in $(seq 100); do
            epmd -port "$port" -names > /dev/null 2>&1 && return
            kill -0 "$server_pid" 2> /dev/null || break
            sleep 0.1
        done
        echo "the $which server did not come up on port $port" >&2
        exit 1
    }
    # stop PORT: a KILL request (both servers honour it with no node registered).
    stop() {
        epmd -port "$1" -kill > /dev/null 2>&1 || true
        wait "$server_pid" 2>/dev/null || true
    }
    lookups() { # PORT PID OPS CLIENTS DELAY_US
        BENCH_EPMD_PORT=$1 BENCH_EPMD_PID=$2 BENCH_PROFILE_OPS=$3 BENCH_PROFILE_CLIENTS=$4 \
            BENCH_PROFILE_DELAY_US=$5 taskset -c 0 "$bench"
    }
    when() { if [ "$1" = 0 ]; then echo 'with the connect'; else echo "$1 us after the connect"; fi; }
    {
        echo "# An EPMD lookup: the embedded server (\`epmd_server\` example) against the real epmd"
        echo
        echo "\`PORT_PLEASE2\` for a registered node, one TCP connection per lookup, as in benchmark 3:"
        echo "each server on CPU 1, the clients (our \`EpmdClient\`) on CPU 0. Written by"
        echo "\`benches/profile.sh --epmd-only\` on $(date -u +%Y-%m-%d)."
        echo
        echo "## CPU per lookup (20,000 lookups per line; getrusage for the clients, /proc for the server)"
        echo
        echo '```'
    } > "$md"
    say "epmd: CPU split"
    local round which clients delay ops port file
    for round in 1 2 3; do
        for which in epmd embedded; do
            for clients in 1 16; do
                port=$(free_port)
                start "$which" "$port"
                printf '%-8s round %d: %s\n' "$which" "$round" \
                    "$(lookups "$port" "$server_pid" 20000 "$clients" 0)" >> "$md"
                stop "$port"
            done
        done
    done
    echo '```' >> "$md"

    {
        echo
        echo "## System calls of the server per lookup (perf stat; 20,000 serial lookups after 200 to warm up)"
        echo
        echo '```'
    } >> "$md"
    if command -v perf > /dev/null; then
        say "epmd: system calls"
        for which in epmd embedded; do
            for delay in 0 500; do
                port=$(free_port)
                start "$which" "$port"
                file=$(mktemp)
                perf stat -x, -e 'syscalls:sys_enter_*' -p "$server_pid" -o "$file" &
                local perf_pid=$!
                sleep 0.5
                lookups "$port" "$server_pid" 20000 1 "$delay" > /dev/null
                kill -INT "$perf_pid"
                wait "$perf_pid" 2>/dev/null || true
                stop "$port"
                awk -F, -v which="$which" -v when="$(when "$delay")" '
                    $1 ~ /^[0-9]+$/ && $1 > 2000 {
                        sub("syscalls:sys_enter_", "", $3)
                        list = list sprintf(" %s %.2f", $3, $1 / 20200)
                        total += $1 / 20200
                    }
                    END { printf "%-8s request %s: %.2f per lookup:%s\n", which, when, total, list }
                ' "$file" >> "$md"
                rm -f "$file"
            done
        done
    else
        echo "(perf is not installed: no system call counts)" >> "$md"
    fi
    echo '```' >> "$md"

    {
        echo
        echo "## User-space instructions of the server per lookup (callgrind; runs of 200 and 2,000 serial lookups, the difference divided by 1,800)"
        echo
        echo '```'
    } >> "$md"
    for which in epmd embedded; do
        for delay in 0 500; do
            say "epmd: callgrind, $which, request $(when "$delay")"
            local totals=()
            for ops in 200 2000; do
                port=$(free_port)
                file="/tmp/callgrind.epmd.$which.$delay.$ops"
                start "$which" "$port" valgrind --tool=callgrind --callgrind-out-file="$file"
                lookups "$port" "$server_pid" "$ops" 1 "$delay" > /dev/null
                stop "$port"
                totals+=("$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')")
            done
            printf '%-8s request %s: %d instructions per lookup\n' "$which" "$(when "$delay")" \
                $(( (totals[1] - totals[0]) / 1800 )) >> "$md"
        done
    done
    echo '```' >> "$md"
    say "epmd: $md"
}

if [ "${1:-}" = --epmd-only ]; then
    epmd_profile
    exit 0
fi

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
epmd_profile
say "done: $out/"
