#!/usr/bin/env bash
# Runs every benchmark of autocluster and writes BENCHMARKS.md (tables) and the SVG plots.
#
#   benches/run.sh            full run: results in benches/results/, BENCHMARKS.md at the root
#   benches/run.sh --quick    short smoke pass: results and BENCHMARKS.md in target/bench-quick/
#   benches/run.sh handshake_otp rpc   only these benchmarks (then the report)
#   BENCH_TRACE=1 benches/run.sh formation   with the formation agents' log (timelines)
#
# Needs: a Rust toolchain, OTP (erl, epmd, erl_call: Debian's erlang-base), etcd,
# rabbitmq-server, hyperfine, taskset (util-linux) and protoc (protobuf-compiler, for the
# etcd client). Every figure is a ratio against a baseline measured in the same run.
set -euo pipefail

cd "$(dirname "$0")/.."

ALL=(handshake_otp handshake_rust epmd rpc formation memory)
selected=()
for arg in "$@"; do
    case "$arg" in
        --quick) export BENCH_QUICK=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) echo "unknown option: $arg" >&2; exit 2 ;;
        *) selected+=("$arg") ;;
    esac
done
[ ${#selected[@]} -eq 0 ] && selected=("${ALL[@]}")

say() { printf '\n\033[1m[bench %s] %s\033[0m\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

missing=()
for tool in cargo erl epmd etcd rabbitmq-server rabbitmqctl hyperfine taskset protoc; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if ! command -v erl_call >/dev/null 2>&1 && ! ls /usr/lib/erlang/lib/erl_interface-*/bin/erl_call >/dev/null 2>&1; then
    missing+=(erl_call)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}" >&2
    echo "Debian/Ubuntu: apt-get install -y erlang-base erlang-dev etcd-server rabbitmq-server hyperfine util-linux protobuf-compiler" >&2
    exit 1
fi

FEATURES=etcd,testing
mode=full
[ "${BENCH_QUICK:-}" = 1 ] && mode=quick
say "mode: $mode; benchmarks: ${selected[*]}; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"

say "building the examples the benchmarks launch (release)"
cargo build --release --features "$FEATURES" --example epmd_server
say "building rpc_call as a tool ships (profile cli: LTO, one codegen unit), static and dynamic"
cargo build --profile cli --example rpc_call
host=$(rustc -vV | sed -n 's/^host: //p')
# With an explicit --target, RUSTFLAGS reach the example and not the build scripts.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile cli --example rpc_call --target "$host"
say "building the benchmarks (release)"
cargo bench --features "$FEATURES" --no-run

n=${#selected[@]}
i=0
start=$(date +%s)
for bench in "${selected[@]}"; do
    i=$((i + 1))
    say "[$i/$n] $bench (elapsed $(( $(date +%s) - start ))s)"
    cargo bench --features "$FEATURES" --bench "$bench"
done

say "report: tables and SVG plots"
cargo bench --features "$FEATURES" --bench report
if [ "$mode" = quick ]; then
    say "done in $(( $(date +%s) - start ))s: target/bench-quick/BENCHMARKS.md"
else
    say "done in $(( $(date +%s) - start ))s: BENCHMARKS.md, benches/results/"
fi
