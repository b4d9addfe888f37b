#!/usr/bin/env bash
# Installs the build dependencies (deps.sh), configures and builds PrismQ Runner:
# everything, or only the CMake targets given as arguments (e.g. build.sh prismqd).
# Runs from any directory. Environment:
#   BUILD_DIR   build directory (default build; a relative path is taken from the repository root)
#   BUILD_TYPE  CMake build type (default RelWithDebInfo)
#   ASAN        ON builds with AddressSanitizer + UndefinedBehaviorSanitizer (default OFF)
#   WERROR      ON treats compiler warnings as errors (default OFF, as in CMake; test.sh
#               sets ON)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac

bash "$ROOT/scripts/deps.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DASAN="${ASAN:-OFF}" \
  -DWERROR="${WERROR:-OFF}"
if [ $# -gt 0 ]; then
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target "$@"
else
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
