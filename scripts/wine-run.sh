#!/usr/bin/env bash
# Runs a Windows program under Wine: wine-run.sh WINEPREFIX PROGRAM.exe [ARGS...]
# The CMake toolchain cmake/mingw-w64.cmake makes it the crossing emulator (CMAKE_CROSSCOMPILING_EMULATOR,
# with a WINEPREFIX in the build tree), so ctest and add_custom_command run .exe files through it.
# The prefix is created on first use (about 10 s), once even when several runs start together;
# Wine's own messages are off (WINEDEBUG=-all) and it installs no Mono or Gecko. The exit status is
# the program's.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: wine-run.sh WINEPREFIX PROGRAM.exe [ARGS...]" >&2; exit 2; }
WINE=${WINE:-/usr/lib/wine/wine64}
[ -x "$WINE" ] || { echo "wine-run.sh: $WINE not found (Debian package wine64)" >&2; exit 2; }
mkdir -p "$1"
WINEPREFIX=$(cd "$1" && pwd)
shift
export WINEPREFIX WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  (
    flock -w 300 9 || { echo "wine-run.sh: timed out waiting for $WINEPREFIX.lock" >&2; exit 1; }
    [ -f "$WINEPREFIX/system.reg" ] || timeout 300 "$WINE" wineboot -i </dev/null >/dev/null 2>&1 || {
      echo "wine-run.sh: creating the Wine prefix $WINEPREFIX failed" >&2
      exit 1
    }
  ) 9>"$WINEPREFIX.lock"
fi
exec "$WINE" "$@"
