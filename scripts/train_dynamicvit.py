#!/usr/bin/env python
"""Train a DynamicViT token predictor on Fashion-MNIST with a tiny ViT, on CPU in about a minute.

1. Load Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (``vwt.bench.fashion_mnist``).
2. Teacher: ``--teacher DIR`` (a saved ``ViTForImageClassification``), or train a tiny one
   (28 px, patch 4 -> 49 patches + CLS) for ``--teacher-steps`` steps and save it to ``OUT/teacher``.
3. Train the predictor (``vwt.bench.dynamicvit_train.train_dynamicvit``), logging the loss terms.
4. Evaluate test accuracy of the full teacher, DynamicViT with the untrained predictor and DynamicViT
   with the trained one at the same keep ratio; save ``OUT/predictor`` (``predictor.safetensors`` +
   ``config.json``) and ``OUT/metrics.json``.

Example::

    python scripts/train_dynamicvit.py --out runs/dynamicvit-fmnist --keep 0.7
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/dynamicvit-fashion-mnist"),
                   help="output directory (teacher/, predictor/, metrics.json)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="Fashion-MNIST idx files (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--train-limit", type=int, default=10000, help="training images to use")
    p.add_argument("--test-limit", type=int, default=2000, help="test images to evaluate on")
    p.add_argument("--teacher", type=Path, default=None, help="a saved ViTForImageClassification to start from")
    p.add_argument("--teacher-steps", type=int, default=400, help="steps to train the tiny teacher (no --teacher)")
    p.add_argument("--teacher-lr", type=float, default=2e-3, help="teacher learning rate")
    p.add_argument("--hidden-size", type=int, default=64, help="tiny teacher: hidden size")
    p.add_argument("--layers", type=int, default=4, help="tiny teacher: number of layers")
    p.add_argument("--heads", type=int, default=4, help="tiny teacher: attention heads")
    p.add_argument("--patch-size", type=int, default=4, help="tiny teacher: patch size (28 px images)")
    p.add_argument("--keep", "--keep-ratio", type=float, default=0.7,
                   help="rho, a fraction: stage s keeps ceil(rho**s * N) tokens (--keep-ratio: the old spelling)")
    p.add_argument("--prune-layers", type=int, nargs="+", default=None,
                   help="layers before which tokens are pruned (default: 3, 6, 9 of 12 scaled to the depth)")
    p.add_argument("--ratio-weight", type=float, default=2.0, help="weight of the keep-ratio loss")
    p.add_argument("--distill-weight", type=float, default=0.5, help="weight of the token distillation loss")
    p.add_argument("--kl-weight", type=float, default=0.5, help="weight of the logit KL distillation")
    p.add_argument("--gumbel-tau", type=float, default=1.0, help="Gumbel-softmax temperature")
    p.add_argument("--train-backbone", action="store_true",
                   help="train the backbone too (at lr * --backbone-lr-scale; the teacher is a frozen copy)")
    p.add_argument("--backbone-lr-scale", type=float, default=0.01, help="backbone lr relative to --lr")
    p.add_argument("--steps", type=int, default=200, help="predictor training steps")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (teacher and predictor)")
    p.add_argument("--lr", type=float, default=1e-3, help="predictor learning rate")
    p.add_argument("--log-every", type=int, default=25, help="log the loss every N steps (0: never)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from vwt.bench.dynamicvit_train import (
        evaluate_accuracy,
        minibatches,
        train_classifier,
        train_dynamicvit,
    )
    from vwt.bench.fashion_mnist import (
        FASHION_MNIST_CLASSES,
        load_fashion_mnist,
        to_pixel_values,
    )
    from vwt.methods.dynamicvit import DynamicViT, DynamicViTConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    config = DynamicViTConfig(keep=args.keep,
                              prune_layers=tuple(args.prune_layers) if args.prune_layers else None,
                              ratio_weight=args.ratio_weight, distill_weight=args.distill_weight,
                              kl_weight=args.kl_weight, gumbel_tau=args.gumbel_tau, train_backbone=args.train_backbone)
    try:
        train_images, train_labels = load_fashion_mnist("train", args.train_limit, args.data_dir)
        test_images, test_labels = load_fashion_mnist("test", args.test_limit, args.data_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    x_train, y_train = to_pixel_values(train_images), torch.from_numpy(train_labels)
    x_test, y_test = to_pixel_values(test_images), torch.from_numpy(test_labels)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "train_images": len(x_train), "test_images": len(x_test)}

    start = time.perf_counter()
    if args.teacher is not None:
        model = ViTForImageClassification.from_pretrained(args.teacher).eval()
    else:
        model = ViTForImageClassification(ViTConfig(
            image_size=28, patch_size=args.patch_size, num_channels=1, hidden_size=args.hidden_size,
            num_hidden_layers=args.layers, num_attention_heads=args.heads, intermediate_size=2 * args.hidden_size,
            num_labels=10, id2label=dict(enumerate(FASHION_MNIST_CLASSES)),
            label2id={c: i for i, c in enumerate(FASHION_MNIST_CLASSES)}))
        losses = train_classifier(model, minibatches(x_train, y_train, batch_size=args.batch_size, generator=generator),
                                  steps=args.teacher_steps, lr=args.teacher_lr, log_every=args.log_every)
        model.save_pretrained(args.out / "teacher")
        metrics["teacher_loss_first"], metrics["teacher_loss_last"] = losses[0], losses[-1]
    metrics["teacher_seconds"] = round(time.perf_counter() - start, 2)

    dvit = DynamicViT(model, config)
    metrics["config"] = dvit.config.to_dict()
    metrics["teacher_accuracy"] = evaluate_accuracy(lambda x: model(pixel_values=x).logits, x_test, y_test)
    metrics["untrained_predictor_accuracy"] = evaluate_accuracy(lambda x: dvit(x).outputs.logits, x_test, y_test)

    start = time.perf_counter()
    history = train_dynamicvit(dvit, minibatches(x_train, y_train, batch_size=args.batch_size, generator=generator),
                               steps=args.steps, lr=args.lr, backbone_lr_scale=args.backbone_lr_scale,
                               log_every=args.log_every)
    metrics["predictor_seconds"] = round(time.perf_counter() - start, 2)
    window = max(1, min(10, len(history) // 4))
    for key in ("loss", "task", "ratio", "kl", "distill", "keep"):
        metrics[f"{key}_first{window}"] = sum(h[key] for h in history[:window]) / window
        metrics[f"{key}_last{window}"] = sum(h[key] for h in history[-window:]) / window
    metrics["dynamicvit_accuracy"] = evaluate_accuracy(lambda x: dvit(x).outputs.logits, x_test, y_test)
    tokens = dvit(x_test[:1]).tokens_per_layer
    metrics["tokens_per_layer"] = list(tokens)
    metrics["teacher_tokens_per_layer"] = [tokens[0]] * len(tokens)
    dvit.save_pretrained(args.out / "predictor")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("args", "config")}, indent=2))
    print(f"saved the predictor to {args.out / 'predictor'} and metrics to {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
