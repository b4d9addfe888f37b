#!/usr/bin/env bash
# PrismQ Runner benchmarks (see docs/performance.md): prismqd against references measured
# in the same run (stock gRPC C++, a plain posix_spawn loop, a raw pipe), reported as
# ratios. Takes about 5 minutes on 2 cores, plus the build (and, once, the generation of
# the bigtable phase's run table: see below). Never run by ctest.
#
#   scripts/bench/run.sh [RESULTS_JSON] [--only PHASE,...]
#
# Installs the bench-only Debian packages if missing (scripts/deps.sh with extra names),
# builds prismqd (Release) and the bench tools into $BUILD_DIR/bench, runs
# scripts/bench/bench.py, prints a table and writes the figures as JSON to RESULTS_JSON
# (default $BUILD_DIR/bench-results.json). Phases: unary, start, firstbyte, stream,
# progress (512 MiB of text lines through a progress pattern, against the same without),
# fanout, memory, instructions, tls (unary calls, new connections and one follower over
# TLS, with certificates from scripts/gen-dev-certs.sh; handshakes against
# `openssl s_server -www`), bigtable (prismqd on a run table of a million runs written by
# gen_runs through the server's runtab, against an empty table; the table is generated
# once, in about 4 minutes, and kept in $BUILD_DIR/bench/bigtable/), http (GetRun as
# HTTP/1.1 JSON with h2load --h1 against gRPC GetRun, docs/http.md). Environment:
#   BUILD_DIR            build directory (default build-bench; relative to the repository)
#   BUILD_TYPE           CMake build type (default Release)
#   BENCH_UNARY_SECONDS  seconds per h2load run (default 2; 3 runs per server and case)
#   BENCH_PIN=0          unary phase without CPU pinning (default: server on CPU 0,
#                        h2load on CPU 1, when there are 2 CPUs or more)
#   BENCH_BIGTABLE_RUNS  runs in the bigtable phase's table (default 1000000)
# Exits 0 when every measurement ran and passed its correctness checks; a missed
# performance target is reported, not an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build-bench}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
OUT="$BUILD_DIR/bench-results.json"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ARGS+=(--only "$2"); shift 2 ;;
    *) OUT="$1"; shift ;;
  esac
done

BENCH_PKGS=(
  libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc protobuf-compiler
  valgrind nghttp2-client libxxhash-dev iproute2 util-linux g++
)
bash "$ROOT/scripts/deps.sh" "${BENCH_PKGS[@]}"

BUILD_DIR="$BUILD_DIR" BUILD_TYPE="${BUILD_TYPE:-Release}" bash "$ROOT/scripts/build.sh" prismqd prismq_client

B="$BUILD_DIR/bench"
GEN="$B/gen"
SRC="$ROOT/scripts/bench"
PROTO="$ROOT/proto/prismq/runner/v1/runner.proto"
mkdir -p "$GEN"
CFLAGS=(-O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes)

# Rebuilds $1 from the files after it when any of them is newer.
stale() {
  local out="$1"; shift
  [ -e "$out" ] || return 0
  for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}

if stale "$B/grpc_ref_server" "$SRC/grpc_ref_server.cc" "$PROTO"; then
  echo "bench: building grpc_ref_server" >&2
  protoc -I"$ROOT/proto" --cpp_out="$GEN" --grpc_out="$GEN" \
    --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$PROTO"
  # shellcheck disable=SC2046  # pkg-config output is a list of flags
  g++ -O2 -std=c++17 -I"$GEN" "$SRC/grpc_ref_server.cc" \
    "$GEN/prismq/runner/v1/runner.pb.cc" "$GEN/prismq/runner/v1/runner.grpc.pb.cc" \
    -o "$B/grpc_ref_server" $(pkg-config --cflags --libs grpc++ protobuf) -lpthread
fi
if stale "$B/spawn_ref" "$SRC/spawn_ref.c"; then
  gcc "${CFLAGS[@]}" "$SRC/spawn_ref.c" -o "$B/spawn_ref"
fi
if stale "$B/tls_handshake" "$SRC/tls_handshake.c"; then
  # shellcheck disable=SC2046
  gcc "${CFLAGS[@]}" "$SRC/tls_handshake.c" $(pkg-config --cflags --libs openssl) -o "$B/tls_handshake"
fi
LIBS=("$BUILD_DIR/client/libprismq_client.a" "$BUILD_DIR/common/libprismq_common.a"
      "$BUILD_DIR/proto/libprismq_proto.a")
if stale "$B/bench_client" "$SRC/bench_client.c" "${LIBS[@]}"; then
  # shellcheck disable=SC2046
  gcc "${CFLAGS[@]}" -I"$ROOT/client" -I"$ROOT/common" -I"$BUILD_DIR/gen" \
    $(pkg-config --cflags libevent_core libxxhash) "$SRC/bench_client.c" "${LIBS[@]}" \
    $(pkg-config --libs libevent_core libnghttp2 libprotobuf-c libxxhash openssl) -o "$B/bench_client"
fi
# The bigtable phase's generator links the server's core (runtab and what it uses).
CORE_LIBS=("$BUILD_DIR/server/libprismq_server_core.a" "$BUILD_DIR/common/libprismq_common.a"
           "$BUILD_DIR/proto/libprismq_proto.a")
if stale "$B/gen_runs" "$SRC/gen_runs.c" "${CORE_LIBS[@]}"; then
  # shellcheck disable=SC2046
  gcc "${CFLAGS[@]}" -I"$ROOT/server" -I"$ROOT/common" -I"$BUILD_DIR/gen" \
    $(pkg-config --cflags sqlite3 libprotobuf-c libevent_core) "$SRC/gen_runs.c" "${CORE_LIBS[@]}" \
    $(pkg-config --libs sqlite3 libprotobuf-c libevent_core) -lm -o "$B/gen_runs"
fi
# The retention sweep: a standalone program on the server's core (retention_bench.c), not
# a bench.py phase; about 3 minutes, most of it writing its two tables of 100000 runs.
# Runs with the full suite (no --only) or BENCH_RETENTION=1 (never with
# BENCH_RETENTION=0); its JSON lines go to $BUILD_DIR/retention-results.json.
if stale "$B/retention_bench" "$SRC/retention_bench.c" "${CORE_LIBS[@]}"; then
  # shellcheck disable=SC2046
  gcc "${CFLAGS[@]}" -I"$ROOT/server" -I"$ROOT/common" -I"$BUILD_DIR/gen" \
    $(pkg-config --cflags sqlite3 libprotobuf-c libevent_core) "$SRC/retention_bench.c" "${CORE_LIBS[@]}" \
    $(pkg-config --libs sqlite3 libprotobuf-c libevent_core) -lm -o "$B/retention_bench"
fi
if [ "${BENCH_RETENTION:-}" = 1 ] || { [ "${BENCH_RETENTION:-}" != 0 ] && [ ${#ARGS[@]} -eq 0 ]; }; then
  echo "bench: retention sweep (retention_bench)" >&2
  "$B/retention_bench" "$B" | tee "$BUILD_DIR/retention-results.json"
fi

# The Slurm executor against sbatch in a plain loop on a single-node test cluster
# (slurm_bench.py, docs/slurm.md): with the full suite (no --only) or BENCH_SLURM=1
# (never with BENCH_SLURM=0); about 2 minutes; its JSON line goes to
# $BUILD_DIR/slurm-results.json. Needs root (the cluster's daemons).
if [ "${BENCH_SLURM:-}" = 1 ] || { [ "${BENCH_SLURM:-}" != 0 ] && [ ${#ARGS[@]} -eq 0 ]; }; then
  echo "bench: Slurm executor (slurm_bench.py)" >&2
  PRISMQ_BIN="$BUILD_DIR/bin" /usr/bin/python3 "$SRC/slurm_bench.py" | tee "$BUILD_DIR/slurm-results.json"
fi

# prismqd.exe under Wine against plain Windows programs under the same Wine
# (wine_bench.py, docs/windows.md): with the full suite (no --only) or BENCH_WINE=1 (never
# with BENCH_WINE=0); builds the Windows tree first (scripts/build-windows.sh: about 13
# minutes once for its dependencies), then about 3 minutes; its JSON line goes to
# $BUILD_DIR/wine-results.json.
if [ "${BENCH_WINE:-}" = 1 ] || { [ "${BENCH_WINE:-}" != 0 ] && [ ${#ARGS[@]} -eq 0 ]; }; then
  echo "bench: Windows build under Wine (wine_bench.py)" >&2
  bash "$ROOT/scripts/build-windows.sh" >/dev/null
  WIN="$ROOT/build-windows/build"
  if stale "$B/spawn_ref_win.exe" "$SRC/spawn_ref_win.c"; then
    x86_64-w64-mingw32-gcc -O2 -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
      -Wmissing-prototypes -static "$SRC/spawn_ref_win.c" -o "$B/spawn_ref_win.exe"
  fi
  PRISMQ_BIN="$WIN/bin" PRISMQ_WINEPREFIX="$WIN/wineprefix" SPAWN_REF_WIN="$B/spawn_ref_win.exe" \
    BENCH_CLIENT="$B/bench_client" /usr/bin/python3 "$SRC/wine_bench.py" |
    tee "$BUILD_DIR/wine-results.json"
fi

# Followers and connections by the thousand.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec /usr/bin/python3 "$SRC/bench.py" --build-dir "$BUILD_DIR" --out "$OUT" "${ARGS[@]}"
