"""Accuracy retention: how much of the base model's accuracy a method keeps.

- **Linear probe** (:func:`linear_probe`): a logistic regression is trained on the BASE model's pooled
  features of Fashion-MNIST training images, then scores every method's features of the test images.
  The classifier never sees reduced tokens, so the drop is the drift a method puts into the features.
  Images are 28x28 grayscale, resized bicubically to the model's input size, replicated to its
  channels and normalized with its mean/std.
- **CLS cosine** against base on real photos: measured by the harness (``fidelity``).
- **CLIP zero-shot** (:func:`zero_shot_accuracy`): a ``CLIPModel`` and its tokenizer classify a labeled
  folder (class = sub-folder name) against the prompts ``"a photo of a {label}"``.

Methods that differ only in batching give the same outputs; pass ``same_outputs`` (label -> the label
whose outputs it shares) to compute them once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..methods.registry import Runner
from ..preprocess import preprocess_images
from ..vocab.data import iter_images
from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist
from .features import pooled_features

__all__ = ["fashion_mnist_pixel_values", "extract_features", "linear_probe", "load_labeled_folder",
           "text_embeddings", "zero_shot_accuracy"]

logger = logging.getLogger(__name__)


def fashion_mnist_pixel_values(images: np.ndarray, size: Sequence[int], mean: Sequence[float],
                               std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, h, w]`` grayscale -> ``[N, C, H, W]`` float32 in the model's normalization (``C = len(mean)``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.expand(-1, len(mean), -1, -1) - mean_t) / std_t


def extract_features(runner: Callable[[torch.Tensor], Any], inputs: Any, *, batch_size: int = 32,
                     transform: Callable[[Any], torch.Tensor] | None = None, device: str | torch.device = "cpu",
                     progress: bool = False, desc: str = "features",
                     return_tokens: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``[N, D]`` pooled features of ``inputs`` (a tensor or array, sliced into batches, each ``transform``-ed).

    With ``return_tokens``, also the ``[N]`` tokens each image entered the first layer with.
    """
    chunks, tokens = [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not progress, leave=False):
            batch = inputs[start:start + batch_size]
            x = transform(batch) if transform is not None else batch
            result = runner(x.to(device))
            chunks.append(pooled_features(result.outputs))
            tokens.append(torch.as_tensor(result.sequence_lengths).cpu())
    features = torch.cat(chunks)
    return (features, torch.cat(tokens)) if return_tokens else features


def _per_method(runners: Mapping[str, Runner], same_outputs: Mapping[str, str] | None,
                score: Callable[[str, Runner], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``score`` gives ``{"accuracy": ..., ...}`` per method, computed once per group of same outputs."""
    results: dict[str, dict[str, Any]] = {}
    for label, runner in runners.items():
        source = (same_outputs or {}).get(label, label)
        if source != label and source in results:
            results[label] = {**results[source], "same_outputs_as": source}
        else:
            results[label] = {**score(label, runner), "same_outputs_as": None}
    return results


def _add_retention(results: dict[str, dict[str, Any]], base_label: str) -> None:
    base = results[base_label]["accuracy"]
    for entry in results.values():
        entry["retention_vs_base"] = entry["accuracy"] / base if base else None


def linear_probe(runners: Mapping[str, Runner], *, base_label: str = "base", image_size: Sequence[int],
                 image_mean: Sequence[float], image_std: Sequence[float], train_size: int = 2000,
                 test_size: int = 500, batch_size: int = 32, data_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", same_outputs: Mapping[str, str] | None = None,
                 max_iter: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Fashion-MNIST linear probe on the base model's features, evaluated on every method's features.

    Args:
        runners: bound methods (label -> runner), ``base_label`` among them.
        image_size, image_mean, image_std: the model's input size and normalization.
        train_size, test_size: the first images of each split.
        data_dir: the idx files (default: the Debian package's directory).

    Raises:
        FileNotFoundError: Fashion-MNIST is not installed.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler


    train_images, train_labels = load_fashion_mnist("train", limit=train_size, data_dir=data_dir)
    test_images, test_labels = load_fashion_mnist("test", limit=test_size, data_dir=data_dir)
    transform = lambda batch: fashion_mnist_pixel_values(batch, image_size, image_mean, image_std)  # noqa: E731
    features = lambda runner, images, desc: extract_features(  # noqa: E731
        runner, images, batch_size=batch_size, transform=transform, device=device, progress=progress, desc=desc,
        return_tokens=True)
    train_features = features(runners[base_label], train_images, "probe: base train features")[0].double().numpy()
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    classifier.fit(train_features, train_labels)
    train_accuracy = float(classifier.score(train_features, train_labels))

    def score(label: str, runner: Runner) -> dict[str, Any]:
        test_features, tokens = features(runner, test_images, f"probe: {label}")
        return {"accuracy": float(classifier.score(test_features.double().numpy(), test_labels)),
                "tokens_per_image_mean": float(tokens.double().mean())}

    per_method = _per_method(runners, same_outputs, score)
    _add_retention(per_method, base_label)
    logger.info("linear probe: base test accuracy %.3f (train %.3f)", per_method[base_label]["accuracy"],
                train_accuracy)
    return {
        "dataset": "fashion-mnist", "data_dir": str(data_dir or FASHION_MNIST_DIR),
        "train_size": len(train_labels), "test_size": len(test_labels), "num_classes": 10, "chance": 0.1,
        "classifier": f"StandardScaler + LogisticRegression(lbfgs, max_iter={max_iter}) on base pooled features",
        "input": f"28x28 grayscale, bicubic to {list(image_size)}, replicated to {len(image_mean)} channels, "
                 "the model's mean/std",
        "base_train_accuracy": train_accuracy,
        "per_method": per_method,
    }


def load_labeled_folder(folder: str | os.PathLike,
                        image_processor: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A folder of class sub-folders -> ``pixel_values [N, C, H, W]``, ``labels [N]`` and the sorted class names."""
    root = Path(folder)
    classnames = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classnames:
        raise ValueError(f"{root} has no class sub-folders")
    images, labels = [], []
    for record in iter_images(root):
        if record.error is not None:
            logger.warning("skipping %s: %s", record.name, record.error)
            continue
        label = Path(record.name).parts[0]
        if label in classnames and len(Path(record.name).parts) > 1:
            images.append(record.image)
            labels.append(classnames.index(label))
    if not images:
        raise ValueError(f"no readable images in the class sub-folders of {root}")
    return preprocess_images(images, image_processor), torch.tensor(labels), classnames


def text_embeddings(model: torch.nn.Module, tokenizer: Any, classnames: Sequence[str],
                    template: str = "a photo of a {}", device: str | torch.device = "cpu") -> torch.Tensor:
    """``[K, D]`` unit-norm CLIP text embeddings of one prompt per class."""
    text = tokenizer([template.format(name) for name in classnames], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(input_ids=text["input_ids"].to(device),
                                      attention_mask=text["attention_mask"].to(device))
    embeds = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu()


def zero_shot_accuracy(model: torch.nn.Module, runners: Mapping[str, Runner], tokenizer: Any,
                       pixel_values: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], *,
                       base_label: str = "base", template: str = "a photo of a {}", batch_size: int = 32,
                       device: str | torch.device = "cpu", same_outputs: Mapping[str, str] | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """CLIP zero-shot accuracy of every method on labeled images (argmax of image-text cosine)."""
    if not hasattr(model, "get_text_features"):
        raise TypeError(f"zero-shot classification needs a CLIPModel (with a text tower), got {type(model).__name__}")
    text = text_embeddings(model, tokenizer, classnames, template, device)

    def score(label: str, runner: Runner) -> dict[str, Any]:
        images, tokens = extract_features(runner, pixel_values, batch_size=batch_size, device=device,
                                          progress=progress, desc=f"zero-shot: {label}", return_tokens=True)
        predictions = (torch.nn.functional.normalize(images, dim=-1) @ text.T).argmax(-1)
        return {"accuracy": float((predictions == labels.cpu()).float().mean()),
                "tokens_per_image_mean": float(tokens.double().mean())}

    per_method = _per_method(runners, same_outputs, score)
    _add_retention(per_method, base_label)
    return {"num_images": len(labels), "classes": list(classnames), "template": template,
            "chance": 1.0 / len(classnames), "per_method": per_method}
