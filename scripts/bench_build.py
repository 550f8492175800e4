"""Benchmark of vocabulary building: k-means patches/s and streaming + preprocessing time per image.

    python scripts/bench_build.py --k 1000 --patches 200000 --batch-sizes 1024 4096 16384

Patches are real: ViT-B/16 patches (768 values) of the embedded sample photos in CLIP preprocessing,
tiled to the requested count. Not a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from vwt.build import BuildStats, _new_kmeans, iter_patch_batches
from vwt.data import iter_images, sample_images
from vwt.patches import patchify
from vwt.preprocess import default_image_processor, preprocess_images


def kmeans_rate(patches: np.ndarray, k: int, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """(seconds of the k-means++ initialization, patches per second through ``partial_fit`` after it)."""
    first = max(batch_size, k)
    start = time.perf_counter()
    kmeans = _new_kmeans(patches[:first], k, batch_size, seed)
    init_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(patches), batch_size):
        kmeans.partial_fit(patches[i : i + batch_size])
    return init_seconds, len(patches) / (time.perf_counter() - start)


def stream_seconds_per_image(source, repeats: int = 1) -> tuple[float, int]:
    stats = BuildStats()
    start = time.perf_counter()
    for _ in range(repeats):
        for _ in iter_patch_batches(iter_images(source), default_image_processor(), 16,
                                    rng=np.random.default_rng(0), stats=stats, progress=False):
            pass
    return (time.perf_counter() - start) / max(stats.num_images, 1), stats.num_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--patches", type=int, default=200_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    photos = [image for _, image in sample_images()]
    pixels = preprocess_images(photos, default_image_processor())
    real = patchify(pixels, 16).reshape(-1, 768).numpy()
    reps = -(-args.patches // len(real))
    rng = np.random.default_rng(0)
    patches = np.tile(real, (reps, 1))[: args.patches]
    patches = patches[rng.permutation(len(patches))] + rng.normal(0, 1e-3, patches.shape).astype(np.float32)

    results: dict[str, object] = {"k": args.k, "dim": 768, "patches": len(patches), "kmeans": {}}
    print(f"k-means: k={args.k}, {len(patches)} real ViT-B/16 patches (768 values)")
    for batch_size in args.batch_sizes:
        init_seconds, rate = kmeans_rate(patches, args.k, batch_size)
        results["kmeans"][batch_size] = {"init_s": init_seconds, "patches_per_s": rate}
        print(f"  batch {batch_size:6d}: {rate:10.0f} patches/s = {rate * 60 / 1e6:5.2f} M patches/min "
              f"(k-means++ init once: {init_seconds:.1f} s)")

    per_image, n = stream_seconds_per_image("sample")
    results["stream_sample_s_per_image"] = per_image
    print(f"stream + preprocess, embedded sample photos (mixed sizes up to 1411 px): {per_image * 1000:.1f} ms/image ({n} images)")
    with tempfile.TemporaryDirectory() as folder:
        for i, image in enumerate(photos * 3):
            Image.fromarray(np.asarray(image)).convert("RGB").resize((500, 375)).save(Path(folder) / f"{i}.jpg")
        per_image, n = stream_seconds_per_image(folder)
    results["stream_folder_jpeg_500x375_s_per_image"] = per_image
    print(f"stream + preprocess, folder of 500x375 JPEGs (ImageNet-like): {per_image * 1000:.1f} ms/image ({n} images)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
