#!/usr/bin/env bash
# Installs the Debian packages PrismQ Runner needs to build, run and test, and any
# more packages named as arguments (the benchmarks add theirs).
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libevent-dev libnghttp2-dev libssl-dev
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libprotobuf-dev
  libsqlite3-dev libyaml-dev libcmocka-dev
  python3 python3-grpcio python3-protobuf protobuf-compiler-grpc python3-h2
  nghttp2-client openssl procps valgrind groff-base
  nanopb libnanopb-dev clang-format-14
  # tests/integration/test_ui.py: the web page in headless Chromium, driven by Selenium
  chromium chromium-driver python3-selenium
  prometheus
  "$@"
)

# The stock gRPC reflection client of the tests runs on node (tests/integration/
# reflection_client): Debian's node and npm, unless a node with its npm is there already.
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
