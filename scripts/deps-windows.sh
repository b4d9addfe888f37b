#!/usr/bin/env bash
# Cross-builds PrismQ Runner's libraries for Windows (x86_64-w64-mingw32) into a static prefix:
# libevent (with libevent_openssl), nghttp2 (library only), protobuf-c (runtime only), OpenSSL,
# SQLite, libyaml and TRE (POSIX regular expressions, which mingw-w64's C library lacks). Debian ships no mingw builds of them, so their Debian source packages are
# fetched with apt-get source, through an apt configuration of this script's own (a deb-src entry
# made from the machine's deb entries; the machine's sources are never edited), and built once.
#
# Usage: scripts/deps-windows.sh [PREFIX]     (default: build-windows/deps under the repo root)
# Env:   DEPS_WINDOWS_UPDATE=1  refresh the source package lists (else fetched only when missing)
#        JOBS=N                 parallel make jobs (default: nproc)
#
# Result: PREFIX/lib/*.a, PREFIX/include, PREFIX/lib/pkgconfig/*.pc. Beside it, PREFIX.work/ holds
# the apt configuration and lists, the downloaded sources, the build trees and one log per library.
# A stamp per library (PREFIX/.stamps/NAME) records the source version and build recipe it was
# built from: a second run rebuilds nothing and takes seconds. docs/windows.md tells more.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-$ROOT/build-windows/deps}
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
WORK=$PREFIX.work
APTDIR=$WORK/apt
STAMPS=$PREFIX/.stamps
LOGS=$WORK/logs
HOST=x86_64-w64-mingw32
JOBS=${JOBS:-$(nproc)}
# Source packages, in build order (libevent's libevent_openssl needs OpenSSL first).
DEPS=(openssl libevent nghttp2 protobuf-c sqlite3 libyaml tre cmocka)

die() {
  echo "deps-windows.sh: error: $*" >&2
  exit 1
}
say() { echo "deps-windows.sh: $*" >&2; }

# --- 1. The Debian packages this needs, installed by scripts/deps.sh (apt-get update once). ------
TOOLS=(gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 mingw-w64-tools dpkg-dev
       autoconf automake autopoint libtool cmake make pkg-config perl tcl wine64)
need=()
for p in "${TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  timeout 1800 bash "$ROOT/scripts/deps.sh" "${need[@]}" </dev/null ||
    die "installing ${need[*]} failed (scripts/deps.sh)"
fi
command -v "$HOST-gcc" >/dev/null || die "$HOST-gcc not found after installing gcc-mingw-w64-x86-64"

# --- 2. An apt configuration of our own, with deb-src entries. ----------------------------------
mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" \
  "$WORK/src" "$WORK/build" "$LOGS" "$STAMPS"
: >"$APTDIR/sources.list"
APT=(-o "Dir::Etc::SourceList=$APTDIR/sources.list"
     -o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
     -o "Dir::State::Lists=$APTDIR/lists"
     -o "Dir::Cache=$APTDIR/cache"
     -o "Acquire::http::Timeout=30" -o "Acquire::https::Timeout=30" -o "Acquire::Retries=3"
     -o "APT::Get::Only-Source=true" -q)
# Not root: apt works in our own directories without its locks or its download user.
[ "$(id -u)" -eq 0 ] || APT+=(-o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")

# The deb-src entries: the machine's deb entries for this release (its suites CODENAME,
# CODENAME-updates and CODENAME-security), with the same mirrors, components and keys. Other
# repositories (third-party suites) are left out: they may publish no sources.
# shellcheck source=/dev/null
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$CODENAME" ] || die "no VERSION_CODENAME in /etc/os-release"
make_sources() {
  local f
  # One-line format: "deb [options] URI SUITE COMPONENT...".
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk -v cn="$CODENAME" '
      $1 == "deb" {
        i = 2; opts = ""
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i " "; i++ }
        uri = $i; suite = $(i + 1)
        if (suite != cn && suite != cn "-updates" && suite != cn "-security") next
        line = "deb-src " opts uri " " suite
        for (j = i + 2; j <= NF && $j !~ /^#/; j++) line = line " " $j
        print line
      }' "$f" >>"$APTDIR/sources.list.d/prismq-src.list"
  done
  # deb822 format (*.sources): stanzas separated by blank lines.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v cn="$CODENAME" '
      function flush(   n, s, k, keep) {
        if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no" && uris != "") {
          n = split(suites, s, " "); keep = ""
          for (k = 1; k <= n; k++)
            if (s[k] == cn || s[k] == cn "-updates" || s[k] == cn "-security") keep = keep " " s[k]
          if (keep != "") {
            print "Types: deb-src"; print "URIs: " uris; print "Suites:" keep
            print "Components: " comps
            if (signed != "") print "Signed-By: " signed
            print ""
          }
        }
        types = uris = suites = comps = signed = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = $1; sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        k = tolower(key)
        if (k == "types") types = val; else if (k == "uris") uris = val
        else if (k == "suites") suites = val; else if (k == "components") comps = val
        else if (k == "signed-by") signed = val; else if (k == "enabled") enabled = val }
      END { flush() }' "$f" >>"$APTDIR/sources.list.d/prismq-src.sources"
  done
}
rm -f "$APTDIR/sources.list.d/"prismq-src.*
make_sources
[ -s "$APTDIR/sources.list.d/prismq-src.list" ] || rm -f "$APTDIR/sources.list.d/prismq-src.list"
[ -s "$APTDIR/sources.list.d/prismq-src.sources" ] || rm -f "$APTDIR/sources.list.d/prismq-src.sources"
ls "$APTDIR/sources.list.d/"prismq-src.* >/dev/null 2>&1 ||
  die "no deb entry for $CODENAME in /etc/apt/sources.list or /etc/apt/sources.list.d/ to make a deb-src entry from"

# The lists: fetched when missing (or asked for); a second run reads them as they are.
if [ "${DEPS_WINDOWS_UPDATE:-0}" = 1 ] || ! ls "$APTDIR/lists/"*Sources* >/dev/null 2>&1; then
  say "apt-get update (source lists, in $APTDIR)"
  timeout 600 apt-get "${APT[@]}" update </dev/null >"$LOGS/apt-update.log" 2>&1 ||
    { tail -n 20 "$LOGS/apt-update.log" >&2; die "apt-get update with $APTDIR failed (log: $LOGS/apt-update.log)"; }
  ls "$APTDIR/lists/"*Sources* >/dev/null 2>&1 || die "apt-get update fetched no Sources index"
fi

# --- 3. Source packages: versions, download, extraction. -----------------------------------------
DL=$WORK/src/dl
mkdir -p "$DL"
[ "${DEPS_WINDOWS_UPDATE:-0}" = 1 ] && rm -f "$DL"/*.failed

# "NAME VERSION" lines, every version the lists hold, for each source package.
ALLVERSIONS=$(apt-cache "${APT[@]}" showsrc --only-source "${DEPS[@]}" 2>/dev/null |
  awk '/^Package:/ { p = $2 } /^Version:/ { print p, $2 }' | sort -u) ||
  die "apt-cache showsrc failed with the lists in $APTDIR/lists (DEPS_WINDOWS_UPDATE=1 refreshes them)"

# The versions of source package $1 in the lists, newest first.
versions_of() {
  local v out=() i j
  while read -r _ v; do out+=("$v"); done < <(awk -v n="$1" '$1 == n' <<<"$ALLVERSIONS")
  for ((i = 1; i < ${#out[@]}; i++)); do
    for ((j = i; j > 0; j--)); do
      dpkg --compare-versions "${out[j]}" gt "${out[j - 1]}" || break
      v=${out[j]}; out[j]=${out[j - 1]}; out[j - 1]=$v
    done
  done
  [ ${#out[@]} -eq 0 ] || printf '%s\n' "${out[@]}"
}

# Downloads source package $1 version $2 into $DL unless its .dsc is there already. A version the
# archive does not serve (404: its index may name files its pool lacks) is remembered
# ($DL/*.failed) and not asked for again until DEPS_WINDOWS_UPDATE=1, so a later run goes straight
# to the version it built; any other failure (network) is not. Returns 0 when the source is there.
fetch_source() {
  local name=$1 ver=$2 dsc=$DL/${1}_${2#*:}.dsc attempt=$DL/.fetch.out
  [ -f "$dsc" ] && return 0
  [ -f "$dsc.failed" ] && return 1
  say "$name: downloading source $ver"
  if (cd "$DL" && timeout 900 apt-get "${APT[@]}" source --download-only "$name=$ver" </dev/null) \
    >"$attempt" 2>&1 && [ -f "$dsc" ]; then
    cat "$attempt" >>"$LOGS/$name.fetch.log"
    return 0
  fi
  cat "$attempt" >>"$LOGS/$name.fetch.log"
  rm -f "$dsc"
  if grep -q '^E: Failed to fetch .* 404 ' "$attempt"; then
    touch "$dsc.failed"
    say "$name: source $ver is not served by the archive (log: $LOGS/$name.fetch.log); taking an older one"
  else
    say "$name: downloading source $ver failed (log: $LOGS/$name.fetch.log); taking an older one"
  fi
  return 1
}

# Unpacks source package $1 version $2 (Debian's patches applied) into a fresh $SRC.
extract_source() {
  SRC=$WORK/src/$1-${2#*:}
  rm -rf "$SRC"
  run dpkg-source --no-copy -x "$DL/${1}_${2#*:}.dsc" "$SRC"
}

# --- 4. Cross builds. ---------------------------------------------------------------------------
# Every tool runs bounded and logs to $LOG; a failure prints the log's end.
run() {
  if ! timeout "${STEP_TIMEOUT:-3600}" "$@" </dev/null >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "$CUR: '$*' failed or timed out (log: $LOG)"
  fi
}

export PKG_CONFIG=pkg-config PKG_CONFIG_LIBDIR=$PREFIX/lib/pkgconfig PKG_CONFIG_PATH=
unset PKG_CONFIG_SYSROOT_DIR
export CC=$HOST-gcc CXX=$HOST-g++ AR=$HOST-ar RANLIB=$HOST-ranlib WINDRES=$HOST-windres
BUILD_TRIPLET=$(gcc -dumpmachine)

# Autotools packages: autoreconf (Debian's patches may touch configure.ac or Makefile.am, and the
# tarballs from git have no configure), then a static, out-of-tree cross build installed in PREFIX.
autotools_build() {
  run autoreconf -fi "$SRC"
  mkdir -p "$BLD"
  (cd "$BLD" && run "$SRC/configure" --host=$HOST --build="$BUILD_TRIPLET" --prefix="$PREFIX" \
    --libdir="$PREFIX/lib" --disable-shared --enable-static "$@")
  run make -C "$BLD" -j"$JOBS"
  run make -C "$BLD" install
}

# Adds $3 to field $2 ("Cflags:", "Libs.private:") of PREFIX/lib/pkgconfig/$1.pc.
pc_add() {
  local pc=$PREFIX/lib/pkgconfig/$1.pc
  [ -f "$pc" ] || die "$CUR: $pc was not installed"
  grep -q "^$2" "$pc" || echo "$2" >>"$pc"
  sed -i "s|^$2\(.*\)\$|$2\1 $3|" "$pc"
}

build_openssl() {
  # Where the Windows program looks for openssl.cnf, engines and modules. Left to their defaults,
  # they would be this build's paths, i.e. C:\work\... on Windows, a folder any user may create to
  # plant a configuration that loads an engine (CVE-2019-1552). These are OpenSSL's own Windows
  # defaults, writable by administrators only. They are make variables: Configure, running on
  # Linux, takes C:/... for a relative path and would put PREFIX in front of it.
  local dirs=("OPENSSLDIR=C:/Program Files/Common Files/SSL"
              "ENGINESDIR=C:/Program Files/OpenSSL/lib/engines-3"
              "MODULESDIR=C:/Program Files/OpenSSL/lib/ossl-modules")
  mkdir -p "$BLD"
  # no-shared: static libcrypto/libssl; build_libs + install_dev: no programs, engines or docs.
  (cd "$BLD" && run perl "$SRC/Configure" mingw64 no-shared no-tests \
    --cross-compile-prefix=$HOST- --prefix="$PREFIX" --libdir=lib CC=gcc CXX=g++ AR=ar RANLIB=ranlib)
  run make -C "$BLD" -j"$JOBS" "${dirs[@]}" build_libs
  run make -C "$BLD" "${dirs[@]}" install_dev
}

build_libevent() {
  # libevent_openssl: OpenSSL from PREFIX (pkg-config). Its .pc's Libs.private gets OpenSSL's
  # --libs only, so the static one's system libraries are added (OPENSSL_LIBADD). LIBS: the
  # autotools build forgets iphlpapi (if_nametoindex, in evutil.c; libevent's CMake links it), and
  # LIBS is what the .pc files' Libs.private hold.
  OPENSSL_LIBADD=-lcrypt32 LIBS=-liphlpapi autotools_build --disable-samples \
    --disable-libevent-regress --disable-doxygen-doc
}

build_nghttp2() {
  # NGHTTP2_STATICLIB: no __declspec(dllexport/dllimport) in nghttp2.h, in the library and in
  # whatever includes it (the .pc's Cflags carry it).
  CPPFLAGS=-DNGHTTP2_STATICLIB autotools_build --enable-lib-only
  pc_add libnghttp2 Cflags: -DNGHTTP2_STATICLIB
}

build_protobuf-c() {
  autotools_build --disable-protoc
}

build_libyaml() {
  autotools_build
}

# POSIX regular expressions (regcomp/regexec, REG_EXTENDED), which mingw-w64's C library has not:
# TRE, a POSIX-conformant implementation (leftmost-longest matches, as glibc's). Its tre/regex.h
# maps regcomp & co. onto tre_regcomp & co.; the server includes it as <regex.h> on Windows
# (server/ere.h). No agrep program, no approximate matching (not used), no NLS; multibyte off,
# so that patterns are matched byte by byte as UTF-8, as glibc's C locale does.
build_tre() {
  autotools_build --disable-agrep --disable-approx --disable-nls --disable-multibyte \
    --disable-wchar
}

# The unit tests' framework, static: WITH_STATIC_LIB adds libcmocka-static.a beside the DLL;
# it becomes libcmocka.a (cmocka.h declares no dllimport), and the DLL, its import library
# and its CMake package (which names the DLL) are not kept.
build_cmocka() {
  run cmake -S "$SRC" -B "$BLD" -DCMAKE_SYSTEM_NAME=Windows -DCMAKE_C_COMPILER=$HOST-gcc \
    -DCMAKE_RC_COMPILER=$HOST-windres -DCMAKE_FIND_ROOT_PATH=/usr/$HOST \
    -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
    -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib \
    -DWITH_STATIC_LIB=ON -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF -DPICKY_DEVELOPER=OFF
  run cmake --build "$BLD" -j"$JOBS"
  run cmake --install "$BLD"
  mv -f "$PREFIX/lib/libcmocka-static.a" "$PREFIX/lib/libcmocka.a"
  rm -rf "$PREFIX/lib/libcmocka.dll.a" "$PREFIX/bin/cmocka.dll" "$PREFIX/lib/cmake/cmocka"
}

# SQLite's Debian source is the full tree: its amalgamation (sqlite3.c) is generated by a native
# configure + make (tclsh, lemon), then cross-compiled with the compile-time options of Debian's
# own build (the -DSQLITE_* of debian/rules), which the parser generator needs too.
build_sqlite3() {
  local flags version
  flags=$(grep -o -- '-DSQLITE_[A-Z0-9_]*\(=[0-9]*\)\?' "$SRC/debian/rules" | sort -u | tr '\n' ' ')
  [ -n "$flags" ] || die "$CUR: no -DSQLITE_ options found in $SRC/debian/rules"
  version=$(cat "$SRC/VERSION")
  mkdir -p "$BLD"
  (cd "$BLD" && CC=gcc AR=ar RANLIB=ranlib CFLAGS="-O2 $flags" run "$SRC/configure" --disable-tcl --disable-shared)
  run make -C "$BLD" sqlite3.c
  # shellcheck disable=SC2086 # $flags: one word per option
  run $HOST-gcc -O2 -fno-strict-aliasing $flags -c "$BLD/sqlite3.c" -o "$BLD/sqlite3.o"
  run $HOST-ar rcs "$BLD/libsqlite3.a" "$BLD/sqlite3.o"
  mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include"
  install -m 644 "$BLD/libsqlite3.a" "$PREFIX/lib/"
  install -m 644 "$BLD/sqlite3.h" "$BLD/sqlite3ext.h" "$PREFIX/include/"
  cat >"$PREFIX/lib/pkgconfig/sqlite3.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: SQLite
Description: SQL database engine
Version: $version
Libs: -L\${libdir} -lsqlite3
Cflags: -I\${includedir}
PC
}

# What each build must leave in PREFIX (checked before a stamp is written or trusted).
declare -A PRODUCTS=(
  [openssl]="lib/libssl.a lib/libcrypto.a lib/pkgconfig/openssl.pc include/openssl/ssl.h"
  [libevent]="lib/libevent_core.a lib/libevent_openssl.a lib/pkgconfig/libevent_openssl.pc include/event2/event.h"
  [nghttp2]="lib/libnghttp2.a lib/pkgconfig/libnghttp2.pc include/nghttp2/nghttp2.h"
  [protobuf-c]="lib/libprotobuf-c.a lib/pkgconfig/libprotobuf-c.pc include/protobuf-c/protobuf-c.h"
  [sqlite3]="lib/libsqlite3.a lib/pkgconfig/sqlite3.pc include/sqlite3.h"
  [libyaml]="lib/libyaml.a lib/pkgconfig/yaml-0.1.pc include/yaml.h"
  [tre]="lib/libtre.a lib/pkgconfig/tre.pc include/tre/regex.h"
  [cmocka]="lib/libcmocka.a lib/pkgconfig/cmocka.pc include/cmocka.h"
)
products_ok() {
  local f
  for f in ${PRODUCTS[$1]}; do [ -e "$PREFIX/$f" ] || return 1; done
}

# The recipe of a build: its function, the helpers, and the compiler; a change rebuilds it.
recipe() {
  { declare -f "build_$1" autotools_build pc_add run; $HOST-gcc -dumpversion; } | sha256sum | cut -c1-16
}

T0=$SECONDS
SUMMARY=()
for CUR in "${DEPS[@]}"; do
  mapfile -t VERS < <(versions_of "$CUR")
  [ ${#VERS[@]} -gt 0 ] || die "$CUR: no source package in the lists of $APTDIR (DEPS_WINDOWS_UPDATE=1 refreshes them)"
  RECIPE=$(recipe "$CUR")
  STAMP=$STAMPS/$CUR
  done_=
  skipped=
  for VER in "${VERS[@]}"; do
    if [ "$(cat "$STAMP" 2>/dev/null)" = "$VER $RECIPE" ] && products_ok "$CUR"; then
      SUMMARY+=("$(printf '%-11s %-28s cached%s' "$CUR" "$VER" "$skipped")")
      done_=1
      break
    fi
    if ! fetch_source "$CUR" "$VER"; then
      skipped+=" ($VER not downloaded)"
      continue
    fi
    t=$SECONDS
    LOG=$LOGS/$CUR.log
    : >"$LOG"
    say "$CUR: building $VER (log: $LOG)"
    rm -f "$STAMP"
    extract_source "$CUR" "$VER"
    BLD=$WORK/build/$CUR
    rm -rf "$BLD"
    "build_$CUR"
    products_ok "$CUR" || die "$CUR: the build left no ${PRODUCTS[$CUR]} in $PREFIX (log: $LOG)"
    echo "$VER $RECIPE" >"$STAMP"
    rm -rf "$BLD" "$SRC"
    SUMMARY+=("$(printf '%-11s %-28s built in %ss%s' "$CUR" "$VER" $((SECONDS - t)) "$skipped")")
    done_=1
    break
  done
  [ -n "$done_" ] || die "$CUR: no version of its source could be downloaded (${VERS[*]}; log: $LOGS/$CUR.fetch.log)"
done

echo "Windows dependencies (x86_64-w64-mingw32, static) in $PREFIX, $((SECONDS - T0))s:"
printf '  %s\n' "${SUMMARY[@]}"
echo "  pkg-config: PKG_CONFIG_LIBDIR=$PREFIX/lib/pkgconfig pkg-config --static ..."
pcs=("$PREFIX"/lib/pkgconfig/*.pc)
pcs=("${pcs[@]##*/}")
echo "    ${pcs[*]%.pc}"
echo "  CMake: -DCMAKE_TOOLCHAIN_FILE=$ROOT/cmake/mingw-w64.cmake -DPRISMQ_WINDOWS_DEPS=$PREFIX"
