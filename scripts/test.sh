#!/usr/bin/env bash
# Builds and runs every test:
#   1. the main build (warnings are errors) with all unit and integration tests;
#   2. the same tests on an ASan/UBSan build (the servers the integration tests start
#      must then exit 0: no leak, no undefined behaviour);
#   3. the integration tests once more with every server under valgrind memcheck (main
#      build; zero errors and zero leaks, or the server's exit code fails its test),
#      except the load tests and the hostile-client battery, whose time and memory
#      bounds mean nothing under valgrind;
#   4. each libFuzzer target (tests/fuzz) for FUZZ_SECONDS seconds (default 60) after its
#      regression inputs, under ASan/UBSan (scripts/fuzz.sh).
# Options run one part alone: --valgrind (3), --fuzz [SECONDS] (4).
# Runs from any directory. Environment: BUILD_DIR (default build) and ASAN_BUILD_DIR
# (default build-asan); relative paths are taken from the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN_DIR="${BUILD_DIR:-build}"
ASAN_DIR="${ASAN_BUILD_DIR:-build-asan}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
# Integration tests start their own servers on port 0 with temporary directories, so
# they may run in parallel.
JOBS=2
NOT_UNDER_VALGRIND='it\.test_runner_load_|it\.test_hostile'

main_tests() {
  BUILD_DIR="$MAIN_DIR" WERROR=ON bash "$ROOT/scripts/build.sh"
  (cd "$ROOT" && ctest --test-dir "$MAIN_DIR" --output-on-failure -j"$JOBS")
}

asan_tests() {
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  BUILD_DIR="$ASAN_DIR" BUILD_TYPE=Debug ASAN=ON WERROR=ON bash "$ROOT/scripts/build.sh"
  (cd "$ROOT" && ctest --test-dir "$ASAN_DIR" --output-on-failure -j"$JOBS")
}

valgrind_tests() {
  BUILD_DIR="$MAIN_DIR" WERROR=ON bash "$ROOT/scripts/build.sh"
  (cd "$ROOT" && PRISMQ_VALGRIND=1 ctest --test-dir "$MAIN_DIR" --output-on-failure -j"$JOBS" \
    -L integration -E "$NOT_UNDER_VALGRIND" --timeout 900)
}

fuzz_tests() {
  bash "$ROOT/scripts/fuzz.sh" all "$1"
}

case "${1:-}" in
  "")
    main_tests
    asan_tests
    valgrind_tests
    fuzz_tests "$FUZZ_SECONDS"
    ;;
  --valgrind) valgrind_tests ;;
  --fuzz) fuzz_tests "${2:-$FUZZ_SECONDS}" ;;
  *)
    echo "usage: scripts/test.sh [--valgrind | --fuzz [SECONDS]]" >&2
    exit 2
    ;;
esac
