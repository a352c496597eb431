#!/usr/bin/env bash
# Download the Python wheels that bench/gpu_proof.py needs on the GPU machine and that its image lacks, into .whl/
# (ignored by git: /.whl/ in .gitignore). Run here, where pip reaches an index; the GPU machine has no network.
#
#   bash scripts/fetch_device_wheels.sh            # -> .whl/av-<version>-cp311-abi3-manylinux_2_28_x86_64.whl
#
# Only PyAV is missing there (the image's package list has numpy, pillow, torch, triton, cupy, ninja, pybind11);
# av's wheel bundles FFmpeg with libx264 and declares no Requires-Dist, so nothing else is fetched. The wheel is an
# abi3 build (cp311-abi3): it installs on the machine's Python 3.12. Then, on the device, before the proof:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
AV_VERSION=${AV_VERSION:-18.1.0}
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "av==${AV_VERSION}"
# one version of each package: two would stop the whole install there
n=$(ls .whl | grep -c '^av-' || true)
if [ "$n" != "1" ]; then
    echo "fetch_device_wheels: $n av wheels in .whl/ (keep exactly one): $(ls .whl)" >&2
    exit 1
fi
for w in .whl/*.whl; do
    req=$(unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true)
    [ -n "$req" ] && echo "note: $w requires: $req (not in .whl/: check the device's package list)" >&2
    echo "$(stat -c %s "$w") bytes  $w"
done
