#!/usr/bin/env bash
# Builds and runs every test: the main build (warnings are errors) with all unit and
# integration tests, then the same tests again on an ASan/UBSan build (the servers the
# integration tests start must then exit 0: no leak, no undefined behaviour).
# Runs from any directory. Environment: BUILD_DIR (default build) and ASAN_BUILD_DIR
# (default build-asan); relative paths are taken from the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN_DIR="${BUILD_DIR:-build}"
ASAN_DIR="${ASAN_BUILD_DIR:-build-asan}"
# Integration tests start their own servers on port 0 with temporary directories, so
# they may run in parallel.
JOBS=2

BUILD_DIR="$MAIN_DIR" WERROR=ON bash "$ROOT/scripts/build.sh"
(cd "$ROOT" && ctest --test-dir "$MAIN_DIR" --output-on-failure -j"$JOBS")

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
BUILD_DIR="$ASAN_DIR" BUILD_TYPE=Debug ASAN=ON WERROR=ON bash "$ROOT/scripts/build.sh"
(cd "$ROOT" && ctest --test-dir "$ASAN_DIR" --output-on-failure -j"$JOBS")
