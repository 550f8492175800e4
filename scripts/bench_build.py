"""Benchmark of vocabulary building: decoding images/s for 0 (inline), 1 and 2 worker processes side by side,
k-means patches/s, JPEG draft decoding on large files, and the extrapolated ImageNet-1k build time.

    python scripts/bench_build.py --images 240 --repeats 3 --k 1000 --patches 100000

Images are real: the embedded sample photos saved as 500x375 JPEGs (ImageNet's typical size) in a
temporary folder; the decoding pipeline is the build's own (:func:`vwt.vocab.stream.map_chunks`: decode,
CLIP preprocessing, patchify, sample ``--patches-per-image``). Worker counts are interleaved within each
repeat so that load from other jobs hits them alike; the medians are reported. Not a test: it prints
what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vwt.patches import patchify
from vwt.preprocess import default_image_processor, preprocess_images
from vwt.vocab.data import sample_images
from vwt.vocab.decode import ChunkJob
from vwt.vocab.kmeans import KMeansStream
from vwt.vocab.stream import iter_chunks, map_chunks

IMAGENET_TRAIN = 1_281_167


def kmeans_rate(patches: np.ndarray, k: int, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """(seconds of the first call, with its k-means++ seeding; patches per second through ``partial_fit`` after it)."""
    stream = KMeansStream(k, batch_size, seed)
    first = max(batch_size, k)
    start = time.perf_counter()
    stream.add(patches[:first])
    init_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(first, len(patches), batch_size):
        stream.add(patches[i : i + batch_size])
    return init_seconds, (len(patches) - first) / (time.perf_counter() - start)


def decode_rate(folder: Path, job: ChunkJob, num_workers: int) -> tuple[float, float, int]:
    """(images/s in steady state, seconds until every worker has delivered a chunk (start-up), CPU s/image here).

    The steady state starts once ``max(num_workers, 1)`` chunks have come back: each worker's first chunk
    carries its start-up (spawn, imports), paid once per build.
    """
    start, cpu = time.perf_counter(), time.process_time()
    warm_at, warm_images, images, chunks = None, 0, 0, 0
    for result in map_chunks(job, iter_chunks(folder, images_per_chunk=16), num_workers):
        images += result.num_images
        chunks += 1
        if chunks == max(num_workers, 1):
            warm_at, warm_images = time.perf_counter(), images
    end = time.perf_counter()
    cpu_per_image = (time.process_time() - cpu) / images  # all the work when inline; the main process's share else
    return (images - warm_images) / (end - warm_at), warm_at - start, cpu_per_image


def write_jpegs(folder: Path, count: int, size: tuple[int, int]) -> None:
    photos = [Image.fromarray(np.asarray(image)).convert("RGB").resize(size, Image.BICUBIC) for _, image in sample_images()]
    for i in range(count):
        photos[i % len(photos)].save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240, help="500x375 JPEGs decoded per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians reported)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (0: inline)")
    parser.add_argument("--patches-per-image", type=int, default=16)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--patches", type=int, default=100_000, help="patches through k-means")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, object] = {"cpus": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    processor = default_image_processor()
    job = ChunkJob(processor, 16, args.patches_per_image, seed=0, resize={"shortest_edge": 224})
    rates: dict[int, list[float]] = {n: [] for n in args.workers}
    startup: dict[int, list[float]] = {n: [] for n in args.workers}
    cpu: dict[int, list[float]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(folder, args.images, (500, 375))
        for _ in range(args.repeats):
            for n in args.workers:
                rate, first, cpu_per_image = decode_rate(folder, job, n)
                rates[n].append(rate)
                startup[n].append(first)
                cpu[n].append(cpu_per_image)
    print(f"decode + preprocess + patchify + sample {args.patches_per_image} patches, {args.images} JPEGs 500x375, "
          f"{results['cpus']} CPUs, load average before {results['load_before'][0]:.2f}")
    base = statistics.median(rates[args.workers[0]])
    results["decode_images_per_s"] = {}
    for n in args.workers:
        median = statistics.median(rates[n])
        main_cpu = statistics.median(cpu[n])
        results["decode_images_per_s"][n] = {"median": median, "all": rates[n], "startup_s": statistics.median(startup[n]),
                                             "main_process_cpu_ms_per_image": main_cpu * 1000}
        print(f"  workers {n} ({'inline' if n == 0 else 'processes'}): {median:7.1f} images/s "
              f"(x{median / base:.2f} of workers {args.workers[0]}; runs {', '.join(f'{r:.0f}' for r in rates[n])}; "
              f"start-up {statistics.median(startup[n]):.1f} s; main process CPU {main_cpu * 1000:.2f} ms/image)")

    pixels = preprocess_images([image for _, image in sample_images()], processor)
    real = patchify(pixels, 16).reshape(-1, 768).numpy()
    rng = np.random.default_rng(0)
    patches = np.tile(real, (-(-args.patches // len(real)), 1))[: args.patches]
    patches = patches[rng.permutation(len(patches))] + rng.normal(0, 1e-3, patches.shape).astype(np.float32)
    init_seconds, kmeans = kmeans_rate(patches, args.k, args.batch_size)
    results["kmeans"] = {"k": args.k, "batch_size": args.batch_size, "patches_per_s": kmeans, "init_s": init_seconds}
    print(f"k-means k={args.k}, batches of {args.batch_size}: {kmeans:,.0f} patches/s (first call with k-means++: "
          f"{init_seconds:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp)
        write_jpegs(big, 8, (4000, 3000))
        plain = ChunkJob(processor, 16, args.patches_per_image, seed=0, resize=None)
        draft_rates = {"full": [], "draft": []}
        for _ in range(args.repeats):
            draft_rates["full"].append(_inline_rate(big, plain))
            draft_rates["draft"].append(_inline_rate(big, job))
    full, draft = (statistics.median(draft_rates[key]) for key in ("full", "draft"))
    results["draft_4000x3000_images_per_s"] = {"full": full, "draft": draft}
    print(f"4000x3000 JPEGs, inline: full decode {full:.1f} images/s, draft decode {draft:.1f} images/s (x{draft / full:.1f})")

    patches_total = IMAGENET_TRAIN * args.patches_per_image
    kmeans_hours = patches_total / kmeans / 3600
    print(f"ImageNet-1k train ({IMAGENET_TRAIN:,} images, {patches_total / 1e6:.1f} M patches), extrapolated "
          f"(decoding + k-means, no overlap counted):")
    results["imagenet_hours"] = {}
    for n in args.workers:
        hours = IMAGENET_TRAIN / statistics.median(rates[n]) / 3600 + kmeans_hours
        results["imagenet_hours"][n] = hours
        print(f"  workers {n}, at the wall-clock rate measured here: {hours:.2f} h "
              f"(decoding {hours - kmeans_hours:.2f} h + k-means {kmeans_hours:.2f} h)")
    cpu_image = statistics.median(cpu[0]) if 0 in cpu else None
    if cpu_image is not None:  # what the CPU work costs when the cores are free: the inline CPU time per image
        for n in [w for w in args.workers if w > 0]:
            hours = IMAGENET_TRAIN * cpu_image / n / 3600 + kmeans_hours
            results["imagenet_hours"][f"cpu_bound_{n}_free_cores"] = hours
            print(f"  {n} workers on {n} free cores, from the CPU time per image ({cpu_image * 1000:.2f} ms): "
                  f"{hours:.2f} h")
    results["load_after"] = os.getloadavg()
    print(f"load average after: {results['load_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _inline_rate(folder: Path, job: ChunkJob) -> float:
    start = time.perf_counter()
    images = sum(r.num_images for r in map_chunks(job, iter_chunks(folder, images_per_chunk=4), 0))
    return images / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
