#!/usr/bin/env bash
# Installs, builds prismqd, the client library (libprismq, shared and static) and the
# prismq command line (build.sh), then starts prismqd in the foreground with the given
# arguments; without --config it runs on the configuration embedded in the binary.
# Example: scripts/run.sh --listen tcp://127.0.0.1:50051 --log-level debug
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
export BUILD_DIR

# Build chatter goes to stderr so that stdout belongs to the server.
bash "$ROOT/scripts/build.sh" prismqd libprismq libprismq_static prismq >&2
exec "$BUILD_DIR/bin/prismqd" "$@"
