#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz for a while each, one job at a time.
#
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 180
#   TARGET              tstat, notify, command or api_body (default: all four)
#
# Installs what it needs on first use: the nightly toolchain (minimal profile) and
# cargo-fuzz. A crash leaves its input in tests/fuzz/artifacts/TARGET/; after the fix,
# copy it to tests/fuzz/regressions/TARGET/ so that `cargo test --test fuzz_regressions`
# replays it.
set -euo pipefail

seconds=${1:-180}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(tstat notify command api_body)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

rustup toolchain list | grep -q '^nightly' \
    || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz

cd "$root"
for target in "${targets[@]}"; do
    corpus="$here/corpus/$target"
    mkdir -p "$corpus"
    # The kept inputs seed the corpus, so each run starts from what was found before.
    cp -n "$here/regressions/$target/"* "$corpus/" 2>/dev/null || true
    echo "fuzz: $target for $seconds s"
    status=0
    cargo +nightly fuzz run --fuzz-dir "$here" "$target" "$corpus" -- \
        -jobs=1 -workers=1 -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 \
        -print_final_stats=1 || status=$?
    # With -jobs, libFuzzer writes its output to fuzz-0.log in the current folder.
    mkdir -p "$here/logs"
    mv -f fuzz-*.log "$here/logs/$target.log" 2>/dev/null || true
    if ((status != 0)); then
        echo "fuzz: $target failed; see $here/logs/$target.log and $here/artifacts/$target/" >&2
        exit "$status"
    fi
done
