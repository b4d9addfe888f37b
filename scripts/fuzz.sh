#!/usr/bin/env bash
# Fuzzes PrismQ Runner with libFuzzer (tests/fuzz). Installs clang-14 and its runtime
# (through deps.sh), builds the targets under ASan + UBSan in a tree of their own, then:
#   scripts/fuzz.sh TARGET [SECONDS]  runs TARGET's regression inputs once each, then
#                                     fuzzes it for SECONDS (default 60)
#   scripts/fuzz.sh all [SECONDS]     the same for every target, one after the other
#   scripts/fuzz.sh regress [TARGET]  only the regression inputs (of every target)
# Targets: the fuzz_<name>.c of tests/fuzz, by <name> (grpcwire, request, config,
# server, client, pbjson). Fuzzing starts from the seed corpus tests/fuzz/corpus/TARGET, which
# it only reads, and keeps the inputs it finds in BUILD_DIR/corpus-TARGET (a longer
# run by hand goes on from there). Regression inputs are the files of
# tests/fuzz/regressions/TARGET/ (README.md there says what goes in); a target whose
# regressions fail is not fuzzed. A crash, leak, timeout or failed check leaves its
# input in BUILD_DIR/artifacts/TARGET/: the script prints its path and libFuzzer's
# report, goes on with the other targets, and exits 1.
# Each run's full output is in BUILD_DIR/logs/TARGET.log.
# Runs from any directory. Environment: BUILD_DIR (default build-fuzz; a relative path
# is taken from the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build-fuzz}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
FUZZ_SRC="$ROOT/tests/fuzz"

usage() {
  echo "usage: $0 TARGET|all [SECONDS]  or  $0 regress [TARGET]" >&2
  echo "targets: ${TARGETS[*]}" >&2
  exit 2
}

TARGETS=()
for f in "$FUZZ_SRC"/fuzz_*.c; do
  n="${f##*/fuzz_}"
  TARGETS+=("${n%.c}")
done

[ $# -ge 1 ] || usage
CMD="$1"
SECONDS_EACH="${2:-60}"
case "$CMD" in
  all) RUN=("${TARGETS[@]}") ;;
  regress) if [ $# -ge 2 ]; then RUN=("$2"); else RUN=("${TARGETS[@]}"); fi ;;
  *) RUN=("$CMD") ;;
esac
for t in "${RUN[@]}"; do
  [ -f "$FUZZ_SRC/fuzz_$t.c" ] || { echo "fuzz.sh: no target \"$t\"" >&2; usage; }
done
[ "$CMD" = regress ] || [[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]] || usage

bash "$ROOT/scripts/deps.sh" clang-14 libclang-rt-14-dev
# The libraries are compiled by clang here, whose warnings differ from gcc's: they do
# not stop fuzzing (the harnesses themselves are built with -Werror).
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_C_COMPILER=clang-14 -DFUZZ=ON -DBUILD_TESTING=OFF -DWERROR=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j2 --target "${RUN[@]/#/fuzz_}"

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
mkdir -p "$BUILD_DIR/logs"
failed=()

# Prints where libFuzzer left the failing input, and the report before it.
report_failure() {
  local t="$1" log="$2"
  failed+=("$t")
  echo "fuzz.sh: $t FAILED; the end of its report ($log):" >&2
  tail -n 60 "$log" >&2
  local input repro
  # A regression input is named by libFuzzer's "Running:" line, a new one by where it saved it.
  input="$(sed -n 's/^Running: \(.*\)$/\1/p' "$log" | tail -n 1)"
  repro="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
  repro="${input:-$repro}"
  [ -n "$repro" ] && echo "fuzz.sh: $t reproducer: $repro (run it: $BUILD_DIR/fuzz/fuzz_$t $repro)" >&2
  return 0
}

# Runs every regression input of target $1 once. Returns 1 if one fails.
regress() {
  local t="$1" bin="$BUILD_DIR/fuzz/fuzz_$t" log="$BUILD_DIR/logs/$t-regress.log"
  local inputs=()
  if [ -d "$FUZZ_SRC/regressions/$t" ]; then
    while IFS= read -r -d '' f; do inputs+=("$f"); done \
      < <(find "$FUZZ_SRC/regressions/$t" -type f ! -name 'README*' ! -name '.*' -print0 | sort -z)
  fi
  if [ ${#inputs[@]} -eq 0 ]; then
    echo "fuzz.sh: $t: no regression inputs"
    return 0
  fi
  mkdir -p "$BUILD_DIR/artifacts/$t"
  if "$bin" -artifact_prefix="$BUILD_DIR/artifacts/$t/" -timeout=10 -rss_limit_mb=2048 "${inputs[@]}" >"$log" 2>&1; then
    echo "fuzz.sh: $t: ${#inputs[@]} regression inputs pass"
  else
    echo "fuzz.sh: $t: a regression input fails" >&2
    report_failure "$t" "$log"
    return 1
  fi
}

# Fuzzes target $1 for SECONDS_EACH seconds.
fuzz() {
  local t="$1" bin="$BUILD_DIR/fuzz/fuzz_$t" log="$BUILD_DIR/logs/$t.log"
  local corpus="$BUILD_DIR/corpus-$t" dict=()
  mkdir -p "$corpus" "$BUILD_DIR/artifacts/$t"
  [ -f "$FUZZ_SRC/$t.dict" ] && dict=(-dict="$FUZZ_SRC/$t.dict")
  local start=$SECONDS
  if "$bin" "${dict[@]}" -artifact_prefix="$BUILD_DIR/artifacts/$t/" -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    "$corpus" "$FUZZ_SRC/corpus/$t" >"$log" 2>&1; then
    local done_line rate
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed 's/.*DONE *//' || true)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    echo "fuzz.sh: $t: clean for $((SECONDS - start)) s, ${rate:-?} execs/s; ${done_line:-no DONE line}"
  else
    report_failure "$t" "$log"
  fi
}

for t in "${RUN[@]}"; do
  # Fuzzing a target whose regressions fail would only find the same bug again.
  if regress "$t" && [ "$CMD" != regress ]; then fuzz "$t"; fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all clean: ${RUN[*]}"
