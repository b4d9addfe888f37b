#!/usr/bin/env bash
# Builds the Debian packages of PrismQ Runner with Debian's tooling and checks them with
# lintian: prismqd (the server, its systemd unit, /etc/prismq/prismqd.yaml as a
# conffile), prismq (the CLI), libprismq0 (the shared library) and libprismq-dev.
#
# The packaging lives in scripts/debian (the repository has no top-level debian/). The
# source tree as it is now (tracked and untracked files, not ignored ones: uncommitted
# work is packaged as a build would see it) is copied to DEB_BUILD_DIR/prismq-VERSION,
# scripts/debian becomes its debian/, debian/changelog is written with the project's
# version (CMakeLists.txt) and the commit, and `dpkg-buildpackage -us -uc -b` builds
# there; the .deb files land in DEB_BUILD_DIR. lintian must then report nothing (what
# it would report and is right is explained in scripts/debian/*.lintian-overrides).
#
# Installs what it needs first (scripts/deps.sh with the packaging's packages). Runs
# from any directory. Environment: DEB_BUILD_DIR (default build-deb; a relative path is
# taken from the repository root). Prints the paths of the .deb files, one a line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${DEB_BUILD_DIR:-build-deb}"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

# debhelper and dpkg-dev build, lintian checks; systemd's pkg-config file says where
# the unit goes (a Build-Depends). No fakeroot: the packaging does not need root
# (Rules-Requires-Root: no).
bash "$ROOT/scripts/deps.sh" debhelper dpkg-dev lintian systemd >&2

VERSION="$(sed -n 's/^project(prismq VERSION \([0-9][0-9.]*\) .*/\1/p' "$ROOT/CMakeLists.txt")"
[ -n "$VERSION" ] || { echo "package-deb.sh: no project VERSION in CMakeLists.txt" >&2; exit 1; }
SRC="$OUT/prismq-$VERSION"
rm -rf "$SRC"
rm -f "$OUT"/prismq*_"$VERSION"_* "$OUT"/libprismq*_"$VERSION"_*
mkdir -p "$SRC"

# The files of the tree, without build directories; files deleted but still tracked
# are skipped. Outside a git checkout (an unpacked tarball), everything but build*/.
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  COMMIT="$(git -C "$ROOT" describe --always --abbrev=7 --dirty --exclude '*')"
  DATE="$(git -C "$ROOT" log -1 --format=%cD)"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
  COMMIT=unknown
  DATE="$(date -R)"
  tar -C "$ROOT" --exclude='./build*' -cf - . | tar -C "$SRC" -xf -
fi
cp -a "$SRC/scripts/debian" "$SRC/debian"

MAINTAINER="$(sed -n 's/^Maintainer: //p' "$SRC/debian/control")"
cat >"$SRC/debian/changelog" <<EOF
prismq ($VERSION) unstable; urgency=medium

  * Built by scripts/package-deb.sh from commit $COMMIT.

 -- $MAINTAINER  $DATE
EOF

(cd "$SRC" && dpkg-buildpackage -us -uc -b -j"$(nproc)") >&2

CHANGES="$(ls "$OUT"/prismq_"$VERSION"_*.changes)"
lintian --fail-on error,warning,info --display-info "$CHANGES" >&2
ls "$OUT"/*_"$VERSION"_*.deb
