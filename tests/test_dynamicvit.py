"""DynamicViT baseline: equivalence at rho = 1, token counts, training, persistence, errors, Fashion-MNIST."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from vwt.bench.dynamicvit_train import (
    dynamicvit_loss,
    forward_train,
    minibatches,
    policy_attention_mask,
    train_dynamicvit,
)
from vwt.bench.fashion_mnist import (
    FASHION_MNIST_DIR,
    load_fashion_mnist,
    to_pixel_values,
)
from vwt.methods import DynamicViT, DynamicViTConfig
from vwt.methods.dynamicvit import keep_counts, select_tokens

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4)  # 32 px, patch 8 -> 16 patches


def _vit_classifier(num_labels=3):
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, intermediate_size=64,
                                               num_labels=num_labels, **TINY)).eval()


def _model(name):
    torch.manual_seed(0)
    if name == "vit":
        return ViTModel(ViTConfig(image_size=32, patch_size=8, intermediate_size=64, **TINY)).eval()
    if name == "vit-classifier":
        return _vit_classifier()
    if name == "dinov2":
        return Dinov2Model(Dinov2Config(image_size=32, patch_size=8, mlp_ratio=2, **TINY)).eval()
    if name == "clip":
        return CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, intermediate_size=64, **TINY)).eval()
    raise ValueError(name)


def _pixels(batch=3, channels=3, seed=1):
    return torch.randn(batch, channels, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["vit", "vit-classifier", "dinov2", "clip"])
def test_keep_one_reproduces_the_unmodified_model(name):
    model, x = _model(name), _pixels()
    dvit = DynamicViT(model, DynamicViTConfig(keep=1.0))
    with torch.no_grad():
        expected, result = model(pixel_values=x), dvit(x)
    for field in ("logits", "last_hidden_state", "pooler_output"):
        if getattr(expected, field, None) is not None:
            torch.testing.assert_close(getattr(result.outputs, field), getattr(expected, field), rtol=1e-5, atol=1e-5)
    assert result.tokens_per_layer == (17,) * 4


@pytest.mark.parametrize(("name", "rho"), [("vit", 0.6), ("dinov2", 0.7), ("clip", 0.5)])
def test_inference_keeps_ceil_rho_to_the_s_of_the_patches_at_stage_s(name, rho):
    dvit = DynamicViT(_model(name), DynamicViTConfig(keep=rho))
    assert dvit.config.prune_layers == (1, 2, 3)  # (3, 6, 9) of 12 scaled to 4 layers
    with torch.no_grad():
        result = dvit(_pixels(batch=4))
    counts = [math.ceil(rho ** s * 16) for s in (1, 2, 3)]
    assert result.tokens_per_layer == (17, *(1 + k for k in counts))
    assert result.outputs.last_hidden_state.shape == (4, 1 + counts[-1], 32)
    kept = result.kept_patches
    assert kept.shape == (4, counts[-1])
    assert bool((kept[:, 1:] > kept[:, :-1]).all())  # unique, in the original order


def test_keep_counts_and_default_prune_layers_follow_the_paper():
    assert keep_counts(196, 0.7, 3) == [138, 97, 68]  # ceil(137.2), ceil(96.04), ceil(67.228)
    assert keep_counts(10, 0.3, 1) == [3]  # no extra token from float noise (0.3 * 10 = 3.0000000000000004)
    assert keep_counts(4, 0.01, 2) == [1, 1]
    config = DynamicViTConfig()
    assert config.resolve(12).prune_layers == (3, 6, 9)
    assert config.resolve(16).prune_layers == (4, 8, 12)
    assert config.resolve(2).prune_layers == (1,)
    assert config.resolve(12).stage_keep == pytest.approx((0.7, 0.49, 0.343))


def test_select_tokens_keeps_the_highest_scores_cls_first_in_original_order():
    hidden = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)  # CLS + 5 patches
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.0], [5.0, 1.0, 2.0, 3.0, 4.0]])
    kept, index = select_tokens(hidden, scores, 2, prefix=1)
    assert index.tolist() == [[1, 3], [0, 4]]
    assert kept[..., 0].tolist() == [[0, 2, 4], [6, 7, 11]]


def test_training_mask_hides_dropped_tokens_like_removing_them():
    model = _model("vit")
    layer, hidden = model.layers[0], torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(0))
    policy = torch.ones(2, 17)
    policy[0, [2, 5, 6, 11]] = 0
    policy[1, [1, 3, 4, 16]] = 0
    with torch.no_grad():
        masked = layer(hidden, policy_attention_mask(policy, hidden.dtype))
        for b in range(2):
            keep = policy[b].bool()
            torch.testing.assert_close(masked[b, keep], layer(hidden[b:b + 1, keep], None)[0], rtol=1e-4, atol=1e-5)


def _eval_loss(dvit, x, labels, draws=4):
    torch.manual_seed(123)
    total = 0.0
    with torch.no_grad():
        t_out, t_hidden = dvit.forward_full(x)
        for _ in range(draws):
            student = forward_train(dvit, x)
            total += float(dynamicvit_loss(student, t_out, t_hidden, labels, dvit.config, dvit.prefix)["loss"])
    return total / draws


@pytest.mark.parametrize("name", ["vit-classifier", "dinov2", "clip"])
def test_a_few_training_steps_reduce_the_loss(name):
    model = _model(name)
    # rho = 0.9 targets keep ratios 0.9, 0.81, 0.73; a fresh predictor keeps about half per stage.
    dvit = DynamicViT(model, DynamicViTConfig(keep=0.9))
    x, labels = _pixels(batch=8), torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(0))
    batch = [(x, labels)] if name == "vit-classifier" else [x]  # a headless backbone: feature distillation
    before_weights = [p.clone() for p in model.parameters()]
    initial = _eval_loss(dvit, x, labels)
    torch.manual_seed(0)
    history = train_dynamicvit(dvit, batch, steps=15, lr=3e-3, log_every=0)
    final = _eval_loss(dvit, x, labels)
    assert len(history) == 15 and all(math.isfinite(h["loss"]) for h in history)
    assert final < initial, (initial, final)
    assert all(torch.equal(a, b) for a, b in zip(before_weights, model.parameters()))  # backbone frozen
    assert all(p.requires_grad for p in model.parameters())  # ...and handed back as it was
    assert not dvit.predictor.training and not model.training


def test_training_the_backbone_updates_it_against_a_frozen_teacher():
    model = _vit_classifier()
    dvit = DynamicViT(model, DynamicViTConfig(keep=0.8, train_backbone=True))
    before = [p.clone() for p in model.parameters()]
    x, labels = _pixels(batch=4), torch.tensor([0, 1, 2, 0])
    history = train_dynamicvit(dvit, [(x, labels)], steps=3, lr=1e-2, backbone_lr_scale=1.0, log_every=0)
    assert all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_saved_predictor_reloads_bit_exact(tmp_path):
    model = _vit_classifier()
    dvit = DynamicViT(model, DynamicViTConfig(keep=0.6, ratio_weight=1.5))
    with torch.no_grad():
        for p in dvit.predictor.parameters():
            p.add_(torch.randn_like(p))  # weights unlike a fresh initialization
    dvit.save_pretrained(tmp_path / "pred")
    assert sorted(f.name for f in (tmp_path / "pred").iterdir()) == ["config.json", "predictor.safetensors"]
    assert json.loads((tmp_path / "pred" / "config.json").read_text())["prune_layers"] == [1, 2, 3]
    loaded = DynamicViT.from_pretrained(tmp_path / "pred", model)
    assert loaded.config == dvit.config
    original, reloaded = dvit.predictor.state_dict(), loaded.predictor.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    x = _pixels()
    with torch.no_grad():
        first, again = dvit(x), loaded(x)
    assert torch.equal(first.outputs.logits, again.outputs.logits)
    assert first.tokens_per_layer == again.tokens_per_layer


def test_loading_a_predictor_for_another_model_is_a_clear_error(tmp_path):
    DynamicViT(_vit_classifier()).save_pretrained(tmp_path / "pred")
    wider = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=4, num_attention_heads=4))
    with pytest.raises(ValueError, match="does not fit"):
        DynamicViT.from_pretrained(tmp_path / "pred", wider)
    with pytest.raises(FileNotFoundError, match="not a DynamicViT save_pretrained directory"):
        DynamicViT.from_pretrained(tmp_path, _vit_classifier())


@pytest.mark.parametrize("rho", [0.0, -0.2, 1.5, float("nan"), True, "0.5"])
def test_keep_outside_zero_one_is_an_error(rho):
    with pytest.raises(ValueError, match="keep"):
        DynamicViTConfig(keep=rho)


@pytest.mark.parametrize(("layers", "message"), [((0, 2), "out of range"), ((2, 4), "out of range"),
                                                 ((2, 1), "strictly increasing"), ((), "non-empty")])
def test_prune_layers_out_of_range_are_an_error(layers, message):
    with pytest.raises(ValueError, match=message):
        DynamicViT(_model("vit"), DynamicViTConfig(prune_layers=layers))


def test_an_unsupported_model_class_is_an_error():
    with pytest.raises(TypeError, match="unsupported model class Linear"):
        DynamicViT(nn.Linear(4, 4))


def test_the_training_script_documents_its_flags():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_dynamicvit.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--keep", "--prune-layers", "--ratio-weight", "--distill-weight", "--train-backbone", "--out"):
        assert flag in out


fashion_mnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                   reason="Debian package dataset-fashion-mnist not installed "
                                          "(apt-get install dataset-fashion-mnist)")


@fashion_mnist
def test_fashion_mnist_reader_reads_the_real_package_files():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert labels[:5].tolist() == [9, 2, 1, 1, 6]  # the published order of the test set
    assert np.bincount(labels).tolist() == [1000] * 10
    train_images, train_labels = load_fashion_mnist("train", limit=100)
    assert train_images.shape == (100, 28, 28) and train_labels.shape == (100,)
    assert 0 <= int(train_labels.min()) and int(train_labels.max()) <= 9
    pixels = to_pixel_values(train_images)
    assert pixels.shape == (100, 1, 28, 28) and pixels.dtype == torch.float32


def test_fashion_mnist_reader_says_how_to_install_when_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


def test_minibatches_cycle_through_aligned_tensors():
    x, y = torch.arange(10), torch.arange(10) * 2
    stream = minibatches(x, y, batch_size=4, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        bx, by = next(stream)
        assert len(bx) == 4 and torch.equal(by, bx * 2)
