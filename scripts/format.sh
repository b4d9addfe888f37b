#!/usr/bin/env bash
# Formats the project's C sources with clang-format (.clang-format at the root), or with
# --check lists those that differ from it and fails: scripts/test.sh runs the check, so
# one style holds everywhere. Generated code (the build trees) is not ours to format.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLANG_FORMAT="${CLANG_FORMAT:-clang-format-14}"
command -v "$CLANG_FORMAT" >/dev/null || bash "$ROOT/scripts/deps.sh"

cd "$ROOT"
mapfile -t files < <(git ls-files -- '*.c' '*.h')
case "${1:-}" in
  "") "$CLANG_FORMAT" -i "${files[@]}" ;;
  --check)
    bad=()
    for f in "${files[@]}"; do
      "$CLANG_FORMAT" "$f" | cmp -s - "$f" || bad+=("$f")
    done
    if [ ${#bad[@]} -gt 0 ]; then
      printf 'format.sh: not formatted (run scripts/format.sh): %s\n' "${bad[@]}" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: scripts/format.sh [--check]" >&2
    exit 2
    ;;
esac
