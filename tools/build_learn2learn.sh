#!/usr/bin/env bash
# Build a learn2learn 0.2.0 wheel that installs on Python 3.11 with numpy 2.
#
# Why: learn2learn 0.2.0 publishes no cp311 wheel, and the C files in its sdist were made
# by Cython 0.29 and no longer compile (`longintrepr.h`). Its setup.py also requires
# `gsutil` (unused at import) and `qpth`, which pins numpy<2 and breaks pandas/neurokit2;
# learn2learn imports qpth only inside try/except. This script drops those two
# requirements, regenerates the C files with Cython 3 and builds the wheel into
# ./wheelhouse (the Makefile installs the project with --find-links wheelhouse).
#
# Usage: tools/build_learn2learn.sh PYTHON   (a venv python with setuptools, wheel, cython)
set -euo pipefail
PY=$(command -v "${1:-python3}" || echo "${1:-python3}")
case "$PY" in /*) ;; *) PY="$PWD/$PY";; esac
VERSION=0.2.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/wheelhouse"
if ls "$OUT"/learn2learn-$VERSION-*.whl >/dev/null 2>&1; then
  echo "learn2learn wheel already in $OUT"; exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$PY" -m pip download -q --no-deps --no-build-isolation --no-binary learn2learn \
  "learn2learn==$VERSION" -d .
tar xzf "learn2learn-$VERSION.tar.gz"
cd "learn2learn-$VERSION"
sed -i "/'gsutil',/d; /'qpth>=0.0.15',/d" setup.py
if grep -q "gsutil\|qpth" setup.py; then echo "setup.py patch failed" >&2; exit 1; fi
rm -rf .eggs
for f in meta_dataset task_dataset transforms; do
  "$PY" -m cython -3 "learn2learn/data/$f.pyx" -o "learn2learn/data/$f.c"
done
mkdir -p "$OUT"
"$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$OUT" .
echo "built $(ls "$OUT"/learn2learn-$VERSION-*.whl)"
