#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each and reports, per target, the executions, the
# corpus size and the findings; exits non-zero when any target found something.
#
#   fuzz/run.sh SECONDS [TARGET ...]
#
# Environment: FUZZ_JOBS=N runs N targets at a time (default 1); FUZZ_OUT=DIR keeps the
# logs, the grown corpora and the findings there (default: a fresh directory under
# /tmp, printed at the end); FUZZ_RSS_MB caps each target's memory (default 2048).
#
# The checked-in corpora (fuzz/corpus/TARGET, captured from real epmd, erl and RabbitMQ
# traffic, see fuzz/capture/) are read, never written: what a run discovers goes to
# FUZZ_OUT. Needs the nightly toolchain (`rustup toolchain install nightly`) and
# cargo-fuzz, which this script installs when it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

seconds="${1:?usage: fuzz/run.sh SECONDS [TARGET ...]}"
shift
jobs="${FUZZ_JOBS:-1}"
rss="${FUZZ_RSS_MB:-2048}"
out="${FUZZ_OUT:-$(mktemp -d /tmp/autocluster-fuzz.XXXXXX)}"
mkdir -p "$out"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "fuzz: building ${#targets[@]} targets (release, address sanitizer, debug assertions)"
cargo +nightly fuzz build -O --debug-assertions

run_one() {
    local t="$1"
    mkdir -p "$out/$t/corpus" "$out/$t/findings"
    local seeds=()
    [ -d "corpus/$t" ] && seeds=("corpus/$t")
    # The checked-in seeds are read; new inputs go to $out/$t/corpus.
    cargo +nightly fuzz run -O --debug-assertions "$t" "$out/$t/corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$out/$t/findings/" \
        >"$out/$t/log" 2>&1 || true
    echo "fuzz: $t done"
}

running=0
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${seconds}s"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

printf '\n%-22s %8s %14s %10s %8s %9s\n' target seconds executions exec/s corpus findings
total_findings=0
for t in "${targets[@]}"; do
    log="$out/$t/log"
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    execs="${execs:-0}"
    corpus=$(find "$out/$t/corpus" -type f | wc -l)
    findings=$(find "$out/$t/findings" -type f | wc -l)
    if [ "$execs" = 0 ] && [ "$findings" = 0 ]; then
        echo "fuzz: $t did not run; see $log" >&2
        findings=1
    fi
    total_findings=$((total_findings + findings))
    printf '%-22s %8s %14s %10s %8s %9s\n' "$t" "$seconds" "$execs" "$((execs / seconds))" "$corpus" "$findings"
done
echo
echo "fuzz: logs, corpora and findings in $out"
if [ "$total_findings" -ne 0 ]; then
    echo "fuzz: $total_findings finding(s): each is a file under $out/*/findings; reproduce with" >&2
    echo "      cargo +nightly fuzz run -O --debug-assertions TARGET FILE" >&2
    exit 1
fi
