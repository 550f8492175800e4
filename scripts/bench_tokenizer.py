"""Tokenizer cost and end-to-end speed-up on a ViT-B/16 (CLIP architecture, random weights) on real photos.

    python scripts/bench_tokenizer.py --vocab vocabularies/clip-p16-k1000 --threshold 0.1

Prints (1) tokenization time as a fraction of the ViT-B/16 forward at batch 1 and 32, and (2) for each
image alone (batch 1, no padding), the latency ratio reduced/base next to the token ratio. Every ratio
is measured side by side in one run, base and reduced interleaved. Not a test: it prints what it saw.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch

from vwt import VisualVocabulary, build_vocabulary
from vwt.bench.models import clip_b16_random
from vwt.bench.timing import interleaved_rounds, paired_median_ratio
from vwt.encoders import VisualWordModel
from vwt.preprocess import image_processor_from_config, preprocess_images
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.data import sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", default=None, help="vocabulary dir (default: k=1000 built from the sample photos)")
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = [image for _, image in sample_images()]
    vocab = VisualVocabulary.from_pretrained(args.vocab) if args.vocab else build_vocabulary(photos, 1000, progress=False)
    tokenizer = VisualWordTokenizer(vocab, threshold=args.threshold)
    pixels = preprocess_images(photos, image_processor_from_config(vocab.config.preprocess))
    model = clip_b16_random()
    wrapped = VisualWordModel(model)
    results: dict[str, object] = {"vocab_k": vocab.config.k, "threshold": args.threshold,
                                  "threads": torch.get_num_threads()}
    print(f"ViT-B/16 (CLIP architecture), {torch.get_num_threads()} threads, vocabulary k={vocab.config.k}, "
          f"threshold {args.threshold}")

    with torch.inference_mode():
        for batch_size in (1, 32):
            x = pixels[torch.arange(batch_size) % len(pixels)]
            times = interleaved_rounds({"tokenize": lambda b: tokenizer(pixel_values=b), "forward": lambda b: model(pixel_values=b)},
                                       [x], repeats=args.repeats if batch_size == 1 else max(3, args.repeats // 3), warmup=2)
            t = {label: statistics.median(seconds) for label, seconds in times.seconds.items()}
            share = paired_median_ratio(times.seconds["tokenize"], times.seconds["forward"])
            results[f"tokenize_over_forward_b{batch_size}"] = share
            print(f"batch {batch_size:2d}: tokenize {t['tokenize'] * 1e3:7.2f} ms, forward {t['forward'] * 1e3:8.2f} ms, "
                  f"tokenization = {share:.2%} of the forward")

        print("\nper image, batch 1: tokens (with CLS), latency ratio vs token ratio (goal: latency <= tokens + 0.03)")
        rows = []
        for index, x in enumerate(pixels.split(1)):
            batch = tokenizer(pixel_values=x)
            times = interleaved_rounds({"base": lambda b: model(pixel_values=b),
                                        "vwt": lambda b: wrapped(tokenizer(pixel_values=b))}, [x], repeats=args.repeats,
                                       warmup=2)
            token_ratio = (int(batch["num_tokens"][0]) + 1) / 197
            latency_ratio = paired_median_ratio(times.seconds["vwt"], times.seconds["base"])
            rows.append({"image": index, "tokens": int(batch["num_tokens"][0]) + 1, "token_ratio": token_ratio,
                         "latency_ratio": latency_ratio})
            print(f"  image {index:2d}: {rows[-1]['tokens']:3d}/197 tokens, token ratio {token_ratio:.3f}, "
                  f"latency ratio {latency_ratio:.3f} ({latency_ratio - token_ratio:+.3f})")
        excess = [r["latency_ratio"] - r["token_ratio"] for r in rows]
        results["per_image"] = rows
        print(f"latency ratio - token ratio: median {statistics.median(excess):+.3f}, max {max(excess):+.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
