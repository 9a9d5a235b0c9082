#!/bin/sh
# Build the App Center package: dist/ExposureGuard_<version>.qpkg and its .sha256, and an App Center
# repository feed dist/ExposureGuard.xml with its icon (docs/qpkg.md#updates-through-app-center). No QDK needed.
#
#   EXPOSURE_GUARD_FEED_BASE=https://repo.example/qpkg/ ./build.sh   where the feed says the package is
#
#   ./build.sh                               version from src/exposure_guard/__init__.py
#   EXPOSURE_GUARD_VERSION=1.0.1 ./build.sh  another version (tests use this to build an upgrade)
#
# Needs python3 (any 3.8+) and, the first time, pip and access to PyPI: the pinned pure-Python
# libraries in qpkg/requirements.txt are downloaded (hash-checked) into the wheel cache
# ($EXPOSURE_GUARD_WHEEL_CACHE, default build/wheels) and reused afterwards. Reproducible: the same
# sources, version and SOURCE_DATE_EPOCH (default: the time of the last git commit) give the same bytes.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
WHEELS=${EXPOSURE_GUARD_WHEEL_CACHE:-build/wheels}
OUT=${EXPOSURE_GUARD_DIST:-dist}
start=$(date +%s)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
	export SOURCE_DATE_EPOCH
fi

mkdir -p "$WHEELS"
# Download only what the cache lacks; pip checks every hash (--require-hashes via the pinned file).
if ! "$PYTHON" tools/build_qpkg.py --check-wheels --wheels "$WHEELS" >/dev/null 2>&1; then
	echo "== downloading the pinned libraries into $WHEELS"
	"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
		--only-binary=:all: --python-version 3.8 --implementation py --abi none --platform any \
		--dest "$WHEELS" -r qpkg/requirements.txt
fi

echo "== building the package"
target=$("$PYTHON" tools/build_qpkg.py --wheels "$WHEELS" --out "$OUT")

echo "== checking it"
PYTHONPATH=src "$PYTHON" -m exposure_guard.qpkg_inspect --quiet "$target"

size=$(wc -c < "$target")
echo "built $target ($size bytes) in $(( $(date +%s) - start )) s"
cat "$target.sha256"
echo "App Center feed: $OUT/ExposureGuard.xml"
