#!/usr/bin/env bash
# Cross-builds PrismQ Runner for Windows (x86_64, mingw-w64) and packs it as a zip: prismqd.exe,
# prismq.exe, libprismq.dll with its import library, the headers and pkg-config files
# (docs/windows.md).
#
# Usage: scripts/build-windows.sh [OUT_DIR]     (default: build-windows under the repo root)
# Env:   JOBS=N   parallel build jobs (default: nproc)
#
# Steps: scripts/deps-windows.sh (the static dependencies in build-windows/deps; quick once
# built), CMake with cmake/mingw-w64.cmake in OUT_DIR/build (Release, warnings as errors),
# the build, `cmake --install --strip` into OUT_DIR/stage/prismq-VERSION-windows-x86_64, and
# OUT_DIR/prismq-windows-x86_64.zip holding that folder. The tests are not run here:
# `ctest --test-dir OUT_DIR/build` runs them under Wine (scripts/test.sh --windows).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/build-windows}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
JOBS=${JOBS:-$(nproc)}
DEPS=$ROOT/build-windows/deps
BUILD=$OUT/build
ZIP=$OUT/prismq-windows-x86_64.zip

die() {
  echo "build-windows.sh: error: $*" >&2
  exit 1
}
say() { echo "build-windows.sh: $*" >&2; }

# zip packs the archive (scripts/deps.sh installs it when missing).
command -v zip >/dev/null || timeout 1800 bash "$ROOT/scripts/deps.sh" zip </dev/null ||
  die "installing zip failed (scripts/deps.sh zip)"

bash "$ROOT/scripts/deps-windows.sh" "$DEPS" || die "scripts/deps-windows.sh failed"

say "configuring $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/mingw-w64.cmake" \
  -DPRISMQ_WINDOWS_DEPS="$DEPS" -DCMAKE_BUILD_TYPE=Release -DWERROR=ON >/dev/null ||
  die "cmake configure failed"
say "building"
cmake --build "$BUILD" -j"$JOBS" >/dev/null || die "the build failed (cmake --build $BUILD)"

VERSION=$(sed -n 's/^project(prismq VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
[ -n "$VERSION" ] || die "no VERSION in CMakeLists.txt's project()"
NAME=prismq-$VERSION-windows-x86_64
STAGE=$OUT/stage
rm -rf "$STAGE"
cmake --install "$BUILD" --prefix "$STAGE/$NAME" --strip >/dev/null ||
  die "cmake --install failed"

# What the zip must hold, and nothing that needs a DLL it does not hold.
for f in bin/prismqd.exe bin/prismq.exe bin/libprismq.dll lib/libprismq.dll.a include/prismq/client.h \
  include/prismq/runner/v1/runner.pb-c.h include/protobuf-c/protobuf-c.h \
  lib/pkgconfig/prismq.pc lib/pkgconfig/libprotobuf-c.pc lib/libprotobuf-c.a; do
  [ -e "$STAGE/$NAME/$f" ] || die "the install left no $f"
done
for exe in "$STAGE/$NAME"/bin/*.exe "$STAGE/$NAME"/bin/*.dll; do
  while read -r dll; do
    case "${dll,,}" in
      libprismq.dll | kernel32.dll | msvcrt.dll | ws2_32.dll | advapi32.dll | user32.dll | \
        bcrypt.dll | crypt32.dll | iphlpapi.dll | shell32.dll) ;;
      *) die "$(basename "$exe") needs $dll, which Windows does not have and the zip does not hold" ;;
    esac
  done < <(x86_64-w64-mingw32-objdump -p "$exe" | sed -n 's/^\tDLL Name: //p')
done

rm -f "$ZIP"
(cd "$STAGE" && zip -qr -X "$ZIP" "$NAME") || die "zip failed"
echo "Windows build ($NAME) in $ZIP:"
(cd "$STAGE" && find "$NAME" -type f | sort | sed 's/^/  /')
