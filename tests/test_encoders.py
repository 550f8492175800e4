import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel, adapter_for, embed_tokens
from vwt.encoders.batching import BATCHING
from vwt.encoders.run import run_layers
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer

P, SIZE = 8, 32
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=SIZE,
              patch_size=P)


def _clip_model(attn="eager"):
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                          vocab_size=99, max_position_embeddings=16)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=VISION, projection_dim=16,
                                attn_implementation=attn))


MODELS = {
    "clip-vision": lambda attn="eager": CLIPVisionModel(CLIPVisionConfig(**VISION, attn_implementation=attn)),
    "clip": _clip_model,
    "vit": lambda attn="eager": ViTModel(ViTConfig(**VISION, attn_implementation=attn)),
    "vit-classifier": lambda attn="eager": ViTForImageClassification(
        ViTConfig(**VISION, num_labels=5, attn_implementation=attn)
    ),
    "dinov2": lambda attn="eager": Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=SIZE, patch_size=P,
                     attn_implementation=attn)
    ),
}


def _model(name, attn="eager"):
    torch.manual_seed(0)
    return MODELS[name](attn).eval()


def _vocab(k=6):
    config = VocabularyConfig(k=k, patch_size=P, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    words = torch.randn(k, 3 * P * P, generator=torch.Generator().manual_seed(1))
    words[0] = 1.0  # the word of flat patches
    return VisualVocabulary(words, config)


def _pixels(batch=3):
    pixels = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    pixels[0] = 0.5  # a flat image: all its patches match word 0
    pixels[1, :, : SIZE // 2] = 0.5  # half flat
    return pixels


def _outputs(model, out):
    """The tensors that matter per family, as a dict."""
    keys = ("last_hidden_state", "pooler_output", "logits", "image_embeds", "logits_per_image")
    return {k: out[k] for k in keys if k in out and out[k] is not None}


def _call(model, batch, batching="pad", **kwargs):
    with torch.no_grad():
        return VisualWordModel(model, batching=batching)(batch, **kwargs)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("tokenizer", [VisualWordTokenizer(_vocab(), threshold=-1.0), IntraImageTokenizer(1.0, P),
                                       VisualWordTokenizer(_vocab(), threshold=2.0, connected=True, window=1),
                                       VisualWordTokenizer(_vocab(), threshold=2.0, min_keep=1.0)],
                         ids=["vwt-threshold-minus-one", "intra-keep-all", "vwt-all-matched-window-one",
                              "vwt-all-matched-floor-one"])
def test_a_tokenizer_that_reduces_nothing_reproduces_the_unmodified_model(name, attn, tokenizer):
    """With size-aware attention on (the default): every token is one patch, log 1 = 0."""
    model, pixels = _model(name, attn), _pixels()
    with torch.no_grad():
        reference = model(pixel_values=pixels) if name != "clip" else model.get_image_features(pixel_values=pixels)
    got = _call(model, tokenizer(pixel_values=pixels))
    if name == "clip":
        torch.testing.assert_close(got.image_embeds, reference.pooler_output, rtol=1e-5, atol=1e-5)
    else:
        for key, value in _outputs(model, reference).items():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5)


def test_clip_zero_shot_logits_reproduce_clip_model_forward():
    model, pixels = _model("clip"), _pixels()
    input_ids = torch.randint(0, 99, (4, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(input_ids=input_ids, pixel_values=pixels)
    got = _call(model, IntraImageTokenizer(1.0, P)(pixel_values=pixels), input_ids=input_ids)
    torch.testing.assert_close(got.logits_per_image, reference.logits_per_image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("batching", BATCHING)
def test_in_a_batch_each_image_gets_its_own_result_whatever_the_batching(name, attn, batching):
    model, pixels = _model(name, attn), _pixels()
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.1)
    batch = tokenizer(pixel_values=pixels)
    assert len(set(batch["num_tokens"].tolist())) > 1, "the test needs images of different token counts"
    assert (batch["token_sizes"] > 1).any(), "the test needs merged tokens (a size bias)"
    together = _outputs(model, _call(model, batch, batching))
    for i in range(len(pixels)):
        alone = _outputs(model, _call(model, tokenizer(pixel_values=pixels[i : i + 1])))
        n = int(batch["num_tokens"][i]) + 1
        for key, value in alone.items():
            row = together[key][i : i + 1]
            if key == "last_hidden_state":
                row = row[:, :n]
            torch.testing.assert_close(row, value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "clip-vision", "dinov2"])
def test_eager_and_sdpa_agree_on_a_padded_batch(name):
    batch = VisualWordTokenizer(_vocab(), threshold=0.1)(pixel_values=_pixels())
    mask = batch["attention_mask"].bool()
    eager = _call(_model(name, "eager"), batch).last_hidden_state
    sdpa = _call(_model(name, "sdpa"), batch).last_hidden_state
    torch.testing.assert_close(sdpa[mask], eager[mask], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "clip-vision", "dinov2"])
def test_a_merged_token_is_the_mean_of_its_members_patch_embedding_plus_position(name):
    model, pixels = _model(name), _pixels()
    batch = VisualWordTokenizer(_vocab(), threshold=0.1)(pixel_values=pixels)
    adapter = adapter_for(model)
    with torch.no_grad():
        full = adapter.embed(pixels)  # [B, 1 + N, D], positions included
        merged = embed_tokens(adapter, pixels, batch["patch_to_token"], int(batch["num_tokens"].max()))
    torch.testing.assert_close(merged[:, 0], full[:, 0])  # CLS untouched, first
    for i in range(len(pixels)):
        for token in range(int(batch["num_tokens"][i])):
            members = (batch["patch_to_token"][i] == token).nonzero().flatten() + 1
            torch.testing.assert_close(merged[i, 1 + token], full[i, members].mean(0))


def test_inputs_that_do_not_fit_the_model_are_clear_errors():
    model = _model("vit")
    wrong_patch = IntraImageTokenizer(1.0, patch_size=4)(pixel_values=torch.randn(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="another patch size"):
        _call(model, wrong_patch)
    wrong_size = IntraImageTokenizer(1.0, patch_size=P)(pixel_values=torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="does not match the model's 32x32"):
        _call(model, wrong_size)
    with pytest.raises(ValueError, match="not a multiple of the model's patch size"):
        _call(model, {"pixel_values": torch.randn(1, 3, 36, 36), "patch_to_token": torch.zeros(1, 16).long()})
    with pytest.raises(ValueError, match="channels"):
        _call(model, {"pixel_values": torch.randn(1, 1, SIZE, SIZE), "patch_to_token": torch.zeros(1, 16).long()})
    with pytest.raises(TypeError, match="unsupported model class Linear; supported: .*ViTModel"):
        VisualWordModel(torch.nn.Linear(2, 2))


def test_real_dinov2_on_real_photos_uses_fewer_tokens_and_keeps_the_cls_feature(
    dinov2_small, dinov2_small_cache_dir, sample_photos
):
    from vwt import build_vocabulary

    photos = [image for _, image in sample_photos]
    vocab = build_vocabulary(photos, k=1000, patch_size=14, image_processor=dinov2_small_cache_dir, progress=False)
    tokenizer = VisualWordTokenizer(vocab, threshold=0.1)
    batch = tokenizer(photos[:8])
    assert batch["patch_to_token"].shape == (8, 256)
    assert (batch["num_tokens"] < 256).all()
    with torch.no_grad():
        reference = dinov2_small(pixel_values=batch["pixel_values"]).pooler_output
        reduced = VisualWordModel(dinov2_small)(batch).pooler_output
    cosine = torch.nn.functional.cosine_similarity(reduced, reference)
    # Measured: mean 0.949, min 0.797 at 135 of 256 tokens on average (k=1000, threshold 0.1).
    assert cosine.mean() > 0.9 and cosine.min() > 0.7


def test_a_batch_without_attention_mask_gets_it_from_patch_to_token():
    model, pixels = _model("vit"), _pixels()
    batch = VisualWordTokenizer(_vocab(), threshold=0.1)(pixel_values=pixels)
    with_mask = _call(model, batch).pooler_output
    without = _call(model, {"pixel_values": pixels, "patch_to_token": batch["patch_to_token"]}).pooler_output
    torch.testing.assert_close(without, with_mask, rtol=0, atol=0)


def test_a_subclass_of_a_supported_model_is_driven_by_its_family_adapter():
    class MyViT(ViTModel):  # what a user's fine-tuning code often defines
        pass

    torch.manual_seed(0)
    model = MyViT(ViTConfig(**VISION)).eval()
    assert type(adapter_for(model)).__name__ == "ViTAdapter"
    batch = IntraImageTokenizer(1.0, P)(pixel_values=_pixels())
    torch.testing.assert_close(_call(model, batch).last_hidden_state,
                               model(pixel_values=batch["pixel_values"]).last_hidden_state, rtol=1e-5, atol=1e-5)


# --- size-aware (proportional) attention ------------------------------------------------------------


def _merged_batch(pixels=None):
    batch = VisualWordTokenizer(_vocab(), threshold=0.1)(pixel_values=_pixels() if pixels is None else pixels)
    assert (batch["token_sizes"] > 1).any()
    return batch


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_token_of_size_s_attends_like_s_copies_of_one_patch(name, attn):
    """log(s) added to a key's logit is exactly the softmax weight of s identical keys, in every layer."""
    model = _model(name, attn)
    wrapped = VisualWordModel(model)
    batch = _merged_batch(_pixels()[1:2])  # half flat: one large token and many single patches
    with torch.no_grad():
        merged, _ = wrapped.hidden_states(batch)
        tokens = wrapped.embed(batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"],
                               batch["token_sizes"])
        sizes = tokens.sizes[0]
        copies = run_layers(wrapped.adapter.layers, tokens.hidden[0].repeat_interleave(sizes, dim=0)[None], None)
    first_copy = sizes.cumsum(0) - sizes
    # Same arithmetic up to summation order: float32 rounding, far below the size bias's effect (> 1e-2).
    torch.testing.assert_close(merged[0], copies[0, first_copy], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("strength", [True, 0.5])
def test_the_size_bias_is_log_size_added_to_the_attention_logits(attn, strength):
    """A written-out ViT layer: softmax(q k^T * scale + a * log(size of the key)), padding keys excluded."""
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**{**VISION, "num_hidden_layers": 1}, attn_implementation=attn)).eval()
    batch = _merged_batch()
    wrapped = VisualWordModel(model, proportional_attention=strength)
    with torch.no_grad():
        got, mask = wrapped.hidden_states(**batch)
        tokens = wrapped.embed(batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"])
        sizes = batch["token_sizes"]
        layer, attention = model.layers[0], model.layers[0].attention
        b, s, _ = tokens.hidden.shape
        x = layer.layernorm_before(tokens.hidden)
        q, k, v = (proj(x).view(b, s, VISION["num_attention_heads"], -1).transpose(1, 2)
                   for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        bias = float(strength) * torch.cat([torch.ones(b, 1), sizes.float()], 1).clamp_min(1).log()
        logits = q @ k.transpose(-1, -2) * attention.scaling + bias[:, None, None, :]
        logits = logits.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        hidden = tokens.hidden + attention.o_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, s, -1))
        expected = hidden + layer.mlp(layer.layernorm_after(hidden))
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)  # float32 rounding only
    assert tokens.sizes[real].max() > 1 and (tokens.sizes[~real] == 0).all() and (tokens.sizes[:, 0] == 1).all()


def test_a_size_bias_strength_of_zero_is_the_paper_and_bad_strengths_are_errors():
    model, batch = _model("vit", "sdpa"), _merged_batch()
    with torch.no_grad():
        zero = VisualWordModel(model, proportional_attention=0.0)(**batch).pooler_output
        paper = VisualWordModel(model, proportional_attention=False)(**batch).pooler_output
    assert torch.equal(zero, paper)  # the same code path: no sizes at all
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="proportional_attention must be a bool or a finite strength"):
            VisualWordModel(model, proportional_attention=bad)


@pytest.mark.parametrize("batching", BATCHING)
def test_proportional_attention_off_is_the_paper_and_equals_sizes_of_one(batching):
    model, batch = _model("vit", "sdpa"), _merged_batch()
    real = batch["attention_mask"].bool()
    ones = {**batch, "token_sizes": (batch["token_sizes"] > 0).long()}
    with torch.no_grad():
        paper = VisualWordModel(model, batching=batching, proportional_attention=False)(**batch)
        unit = VisualWordModel(model, batching=batching)(**ones)
        sized = VisualWordModel(model, batching=batching)(**batch)
    # The paper's boolean mask and a float mask of zeros: the same softmax up to float32 rounding.
    torch.testing.assert_close(unit.last_hidden_state[real], paper.last_hidden_state[real], rtol=1e-5, atol=1e-5)
    assert (sized.pooler_output - paper.pooler_output).abs().max() > 1e-3  # and the bias does change the result


def test_no_attention_mask_at_all_when_nothing_is_padded_or_merged():
    model, pixels = _model("vit", "sdpa"), _pixels()
    masks = []
    hook = model.layers[0].register_forward_pre_hook(lambda module, args: masks.append(args[1]))
    try:
        with torch.no_grad():
            VisualWordModel(model)(pixel_values=pixels)
            VisualWordModel(model)(IntraImageTokenizer(1.0, P)(pixel_values=pixels))
            VisualWordModel(model, batching="pad")(_merged_batch())
    finally:
        hook.remove()
    assert masks[0] is None and masks[1] is None
    assert masks[2].dtype == torch.float32 and masks[2].shape == (3, 1, 1, 17)


def test_flash_or_flex_attention_cannot_take_the_size_bias():
    model = _model("vit", "eager")
    model.config._attn_implementation = "flex_attention"  # only the name is read; nothing runs
    try:
        with pytest.raises(ValueError, match="proportional_attention=False"):
            VisualWordModel(model)
        VisualWordModel(model, proportional_attention=False)
    finally:
        model.config._attn_implementation = "eager"


# --- an nn.Module ----------------------------------------------------------------------------------


def test_the_wrapper_is_a_module_that_passes_through_to_the_model():
    model, batch = _model("vit"), _merged_batch()
    wrapped = VisualWordModel(model)
    assert isinstance(wrapped, torch.nn.Module)
    assert list(wrapped.state_dict()) == ["model." + key for key in model.state_dict()]
    assert wrapped.train() is wrapped and model.training
    wrapped.eval()
    assert not model.training
    with torch.no_grad():
        single = wrapped(**batch)  # the tokenizer's num_tokens and word_ids are ignored
        assert torch.equal(wrapped(batch).pooler_output, single.pooler_output)
        wrapped.to(torch.float64)
        assert next(model.parameters()).dtype == torch.float64
        double = wrapped(**batch)
    assert double.pooler_output.dtype == torch.float64
    # float64 against float32: the float32 run's rounding (~1e-6 relative) bounds the difference.
    torch.testing.assert_close(double.pooler_output.float(), single.pooler_output, rtol=1e-4, atol=1e-5)
    assert wrapped.half() is wrapped and next(model.parameters()).dtype == torch.float16


# --- torch.compile ---------------------------------------------------------------------------------

# aot_eager runs dynamo's graph capture and AOTAutograd, which is where the wrapper's Python could
# break; inductor's code generation (about a minute on a 2-core machine) adds nothing of ours to test.
COMPILE_BACKEND = "aot_eager"


def test_torch_compile_of_the_wrapper_and_of_the_model_give_the_same_outputs():
    torch._dynamo.reset()
    model = _model("vit", "sdpa")
    tokenizer = VisualWordTokenizer(_vocab(), max_tokens=9)
    batch, other = tokenizer(pixel_values=_pixels()), tokenizer(pixel_values=_pixels()[[2, 0, 1]] * 0.5)
    with torch.no_grad():
        expected = {name: VisualWordModel(model)(**b).pooler_output for name, b in (("batch", batch), ("other", other))}
        compiled = torch.compile(VisualWordModel(model), backend=COMPILE_BACKEND)
        # The same ops traced into one graph: float32 rounding at most.
        torch.testing.assert_close(compiled(**batch).pooler_output, expected["batch"], rtol=1e-5, atol=1e-5)
        with torch._dynamo.config.patch(error_on_recompile=True):  # a budget fixes every shape
            torch.testing.assert_close(compiled(**other).pooler_output, expected["other"], rtol=1e-5, atol=1e-5)
        of_compiled = VisualWordModel(torch.compile(model, backend=COMPILE_BACKEND))
        assert of_compiled.model is model
        assert list(of_compiled.state_dict()) == ["model." + key for key in model.state_dict()]
        torch.testing.assert_close(of_compiled(batch).pooler_output, expected["batch"], rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["clip-vision", "dinov2"])
def test_ragged_batches_through_flex_attention_give_each_image_its_own_result(name):
    """The compiled FlexAttention kernel (document block mask, log(size) as score_mod) in the real layer stack."""
    model, pixels = _model(name, "sdpa"), _pixels()
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.1)
    batch = tokenizer(pixel_values=pixels)
    with torch.no_grad():
        together = VisualWordModel(model, batching="ragged", attention_kernel="flex")(batch).last_hidden_state
        for i in range(len(pixels)):
            alone = _call(model, tokenizer(pixel_values=pixels[i : i + 1]), "pad").last_hidden_state
            torch.testing.assert_close(together[i : i + 1, : alone.shape[1]], alone, rtol=1e-5, atol=1e-5)
