#!/usr/bin/env bash
# Builds and runs every test:
#   1. the format check (scripts/format.sh --check: clang-format, .clang-format), then the
#      main build (warnings are errors) with all unit and integration tests;
#   2. a Release build (-O3, warnings are errors) with the unit tests only: warnings and
#      bugs that only the optimiser brings out;
#   3. the same tests as 1 on an ASan/UBSan build (the servers the integration tests
#      start must then exit 0: no leak, no undefined behaviour);
#   4. the integration tests once more with every server under valgrind memcheck (main
#      build; zero errors and zero leaks, or the server's exit code fails its test),
#      except the load tests and the hostile-client battery, whose time and memory
#      bounds mean nothing under valgrind, and the Slurm test cluster's, which runs no server;
#   5. the Debian packages (scripts/package-deb.sh, lintian clean), installed on this
#      machine, used, and purged (tests/integration/test_package.py: needs root, and
#      refuses where the packages or their files are there already);
#   6. each libFuzzer target (tests/fuzz) for FUZZ_SECONDS seconds (default 60) after its
#      regression inputs, under ASan/UBSan (scripts/fuzz.sh).
#   7. the Windows build (scripts/build-windows.sh, docs/windows.md: its dependencies are
#      cross-built from Debian's sources once, about 13 minutes cold, then cached in
#      build-windows/deps), its unit tests under Wine and tests/windows, prismqd.exe under
#      Wine driven by grpcio.
# Options run one part alone: --release (2), --valgrind (4), --package (5),
# --fuzz [SECONDS] (6), --windows (7).
# Runs from any directory. Environment: BUILD_DIR (default build), RELEASE_BUILD_DIR
# (default build-release), ASAN_BUILD_DIR (default build-asan) and DEB_BUILD_DIR (default
# build-deb); relative paths are taken from the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN_DIR="${BUILD_DIR:-build}"
RELEASE_DIR="${RELEASE_BUILD_DIR:-build-release}"
ASAN_DIR="${ASAN_BUILD_DIR:-build-asan}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
# Integration tests start their own servers on port 0 with temporary directories, so
# they may run in parallel.
JOBS=2
NOT_UNDER_VALGRIND='it\.test_runner_load_|it\.test_hostile|it\.test_slurm_cluster'

main_tests() {
  bash "$ROOT/scripts/format.sh" --check
  BUILD_DIR="$MAIN_DIR" WERROR=ON bash "$ROOT/scripts/build.sh"
  (cd "$ROOT" && ctest --test-dir "$MAIN_DIR" --output-on-failure -j"$JOBS")
}

release_tests() {
  BUILD_DIR="$RELEASE_DIR" BUILD_TYPE=Release WERROR=ON bash "$ROOT/scripts/build.sh"
  (cd "$ROOT" && ctest --test-dir "$RELEASE_DIR" --output-on-failure -j"$JOBS" -L unit)
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

package_tests() {
  bash "$ROOT/scripts/package-deb.sh" >/dev/null
  /usr/bin/python3 "$ROOT/tests/integration/test_package.py" -v
}

fuzz_tests() {
  bash "$ROOT/scripts/fuzz.sh" all "$1"
}

windows_tests() {
  bash "$ROOT/scripts/build-windows.sh"
  (cd "$ROOT" && ctest --test-dir build-windows/build --output-on-failure -j"$JOBS")
}

case "${1:-}" in
  "")
    main_tests
    release_tests
    asan_tests
    valgrind_tests
    package_tests
    fuzz_tests "$FUZZ_SECONDS"
    windows_tests
    ;;
  --release) release_tests ;;
  --valgrind) valgrind_tests ;;
  --package) package_tests ;;
  --fuzz) fuzz_tests "${2:-$FUZZ_SECONDS}" ;;
  --windows) windows_tests ;;
  *)
    echo "usage: scripts/test.sh [--release | --valgrind | --package | --fuzz [SECONDS] | --windows]" >&2
    exit 2
    ;;
esac
