#!/usr/bin/env bash
# bootstrap.sh -- from a fresh Debian 12 machine (as root) to a built tessera
# and the demo job run on the sample sky the project generates itself.
#   bash tools/bootstrap.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

packages=(meson ninja-build pkg-config gcc libc6-dev
          libuv1-dev wcslib-dev libcfitsio-dev libzstd-dev libxxhash-dev libpng-dev zlib1g-dev libchealpix-dev
          python3-astropy-healpix swarp python3-drizzle python-drizzle-testdata
          python3-reproject python3-shapely python3-pil valgrind libopenmpi-dev openmpi-bin
          clang-14 libclang-rt-14-dev
          python3-dev python3-numpy python3-astropy python3-dask python3-distributed
          python3-mesonpy python3-pytest python3-pytest-astropy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release
fi
ninja -C "$build"
"$build/cli/tessera" demo "$build/sample"
