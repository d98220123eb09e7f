#!/usr/bin/env bash
# Installs what uv-supervisor needs to build on Debian/Ubuntu, only when it is missing:
# libuv1-dev (the libuv headers and library) and pkg-config. Works as root (no sudo needed)
# and as a normal user with sudo. Prints nothing when everything is already there.
set -euo pipefail

missing=()
dpkg -s libuv1-dev >/dev/null 2>&1 || missing+=(libuv1-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "uv-supervisor needs: ${missing[*]} (apt-get install), but this user is not root and has no sudo." >&2
    exit 1
fi
echo "Installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
