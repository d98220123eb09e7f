#!/usr/bin/env bash
# Builds a fully static executable (no libuv.so, no Swift runtime libraries, no libc.so at run
# time): bash scripts/build-static.sh [PRODUCT]   (default: example-daemon)
# The binary lands in .build-static/release/PRODUCT.
#
# Debian ships libuv's static library as libuv_a.a, so the linker's `-luv` (from the CLibUV
# module map) finds only the shared one; a link named libuv.a in a directory of our own, put
# first on the library path, fixes that without touching the system.
set -euo pipefail
cd "$(dirname "$0")/.."
product="${1:-example-daemon}"
bash scripts/bootstrap.sh
archive="$(pkg-config --variable=libdir libuv)/libuv_a.a"
if [ ! -f "$archive" ]; then
    echo "no static libuv at $archive (Debian's libuv1-dev ships one)" >&2
    exit 1
fi
mkdir -p .build-static/libuv
ln -sf "$archive" .build-static/libuv/libuv.a
# glibc warns that getpwuid_r (in libuv), dlopen (in the Swift runtime) and the user and group
# lookups of UVSupervisorConfig need its shared NSS libraries at run time if they are ever
# called; no daemon calls them (uv-supervisor has uv-supervisor-config resolve names).
swift build -c release --product "$product" --scratch-path .build-static \
    -Xswiftc -static-executable -Xlinker -L"$PWD/.build-static/libuv" 2>&1 \
    | grep -v -E "Using '(getpwuid_r|getpwnam_r|getgrnam_r|getgrouplist|dlopen)' in statically linked applications"
binary=".build-static/release/$product"
file "$binary" | grep -q "statically linked" || { echo "$binary is not static" >&2; exit 1; }
echo "$binary: $(stat -c %s "$binary") bytes (strip it for about 60% of that)"
