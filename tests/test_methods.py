import pytest
import torch
from transformers import ViTConfig, ViTModel

from vwt import methods
from vwt.methods.quantize import quantize_int8


def _vit(layers=4):
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                       image_size=32, patch_size=8)
    return ViTModel(config).eval()


@pytest.mark.parametrize(
    "method, expected_lengths",
    [
        (methods.load("base"), [17] * 4),
        (methods.load("intra", keep=0.5), [9] * 4),
        (methods.load("tome", r=3), [17, 14, 11, 8]),
        (methods.load("q8"), [17] * 4),
        (methods.load("dynamicvit", keep=0.5), [17, 9, 5, 3]),
    ],
    ids=lambda v: v.label if isinstance(v, methods.Method) else None,
)
def test_every_method_runs_with_one_call_shape_and_reports_tokens_per_layer(method, expected_lengths):
    model, pixels = _vit(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        result = method.bind(model)(pixels)
    assert result.tokens_per_layer == tuple(expected_lengths)
    assert result.outputs.last_hidden_state.shape[0] == 2
    assert result.sequence_lengths.shape == (2,)


def test_base_method_is_the_unmodified_model():
    model, pixels = _vit(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(methods.load("base").bind(model)(pixels).outputs.pooler_output,
                                   model(pixel_values=pixels).pooler_output, rtol=0, atol=0)


def test_labels_name_the_options():
    assert methods.load("tome", r=13).label == "tome(r=13)"
    assert methods.load("vwt", vocab="vocabularies/clip-p16-k100", threshold=0.1).label == \
        "vwt(vocab=clip-p16-k100, threshold=0.1)"


def test_bad_method_names_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown method 'magic'; choose one of base, vwt"):
        methods.load("magic")
    with pytest.raises(ValueError, match="vwt needs vocab="):
        methods.load("vwt").bind(_vit())
    with pytest.raises(TypeError, match="unsupported model class Linear"):
        methods.load("base").bind(torch.nn.Linear(2, 2))


def test_q8_leaves_the_original_model_untouched_and_quantizes_every_linear():
    model = _vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    linears = [m for m in quantized.modules() if isinstance(m, (torch.nn.Linear, DynamicInt8Linear))]
    assert len(linears) == 6 * 4 + 1  # q, k, v, out, fc1, fc2 per layer + the pooler
    assert all(isinstance(m, DynamicInt8Linear) for m in linears)


# Dynamic int8 rounds activations with whatever kernel the CPU has (fbgemm with or without VNNI, oneDNN),
# so the error is CPU-dependent: CLS cosine to fp32 was 0.992-0.996 on this machine's Intel CPU and
# 0.987-0.996 on an AMD EPYC. The bound 0.97 leaves room for other kernels while staying far above the
# cosine between two different photos' CLS (well below 0.9), which the second assertion checks directly:
# each quantized image is still nearest to its own fp32 features.
def test_q8_output_stays_close_to_fp32_on_real_photos_with_the_real_dinov2(dinov2_small, dinov2_small_cache_dir,
                                                                          sample_photos):
    from vwt.preprocess import load_image_processor, preprocess_images

    images = [image for _, image in sample_photos[:4]]
    pixels = preprocess_images(images, load_image_processor(dinov2_small_cache_dir))
    with torch.no_grad():
        reference = dinov2_small(pixel_values=pixels).pooler_output
        quantized = methods.load("q8").bind(dinov2_small)(pixels).outputs.pooler_output
    cosine = torch.nn.functional.cosine_similarity(quantized.unsqueeze(1), reference.unsqueeze(0), dim=-1)  # [4, 4]
    assert (cosine.diagonal() >= 0.97).all(), cosine
    assert torch.equal(cosine.argmax(dim=1), torch.arange(len(images))), cosine


def test_vwt_uses_the_threshold_saved_with_a_tokenizer(tmp_path, sample_vocab_dir):
    from vwt import VisualWordTokenizer

    VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5).save_pretrained(tmp_path / "tok")
    model = ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                               image_size=224, patch_size=16)).eval()
    pixels = torch.randn(1, 3, 224, 224)
    saved = methods.load("vwt", vocab=str(tmp_path / "tok")).bind(model)(pixels).sequence_lengths
    direct = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5)(pixel_values=pixels)["num_tokens"]
    assert saved.tolist() == (direct + 1).tolist()


def test_vwt_passes_the_token_budget_and_the_attention_switch_through(sample_vocab_dir):
    model = ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=224, patch_size=16)).eval()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sized = methods.load("vwt", vocab=str(sample_vocab_dir), max_tokens=50).bind(model)(pixels)
        paper = methods.load("vwt", vocab=str(sample_vocab_dir), max_tokens=50,
                             proportional_attention=False).bind(model)(pixels)
        kept = methods.load("vwt", vocab=str(sample_vocab_dir), keep=0.25).bind(model)(pixels)
    assert sized.sequence_lengths.tolist() == [51, 51] and list(sized.tokens_per_layer) == [51, 51]
    assert sized.token_sizes.shape == (2, 51) and sized.token_sizes.sum(1).tolist() == [197, 197]  # CLS + 196
    assert kept.sequence_lengths.tolist() == [50, 50]  # round(0.25 * 196) = 49, plus CLS
    assert (sized.outputs.pooler_output - paper.outputs.pooler_output).abs().max() > 1e-4
    with pytest.raises(ValueError, match="conflict with the given tokenizer"):
        from vwt import VisualWordTokenizer

        methods.load("vwt", vocab=VisualWordTokenizer.from_pretrained(sample_vocab_dir), max_tokens=50).bind(model)


def test_base_runs_a_subclass_of_clip_model_through_its_image_path():
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    class MyCLIP(CLIPModel):  # a user's subclass: dispatch is by type, not by class name
        pass

    torch.manual_seed(0)
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                          vocab_size=99, max_position_embeddings=16)
    model = MyCLIP(CLIPConfig(text_config=text.to_dict(), projection_dim=16, vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8))).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        result = methods.load("base").bind(model)(pixels)
        expected = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(result.outputs.image_embeds, expected, rtol=1e-5, atol=1e-6)
    assert result.sequence_lengths.tolist() == [17, 17]


@pytest.mark.parametrize("method", [methods.load("base"), methods.load("tome", r=3), methods.load("tome", r=0.2),
                                    methods.load("dynamicvit", keep=0.5)],
                         ids=lambda m: m.label)
def test_a_dense_method_runs_a_large_cpu_batch_in_groups_with_the_result_of_the_whole_batch(method):
    model, pixels = _vit(), torch.randn(14, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    runner = method.bind(model)
    assert [len(g) for g in methods.registry.dense_groups(14, "cpu")] == [7, 7]  # two groups, in batch order
    with torch.no_grad():
        grouped, whole = runner(pixels), runner.run(pixels)  # run: the method on one group, here all 14
    real = torch.ones(14, whole.outputs.last_hidden_state.shape[1], dtype=torch.bool)
    if whole.token_sizes is not None:  # an adaptive r pads; the groups pad to the same longest image
        assert torch.equal(grouped.token_sizes, whole.token_sizes)
        real = whole.token_sizes > 0
    for key in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(grouped.outputs[key][real] if key == "last_hidden_state" else grouped.outputs[key],
                                   whole.outputs[key][real] if key == "last_hidden_state" else whole.outputs[key],
                                   rtol=1e-5, atol=1e-5)
    assert grouped.tokens_per_layer == pytest.approx(whole.tokens_per_layer)
    assert torch.equal(grouped.sequence_lengths, whole.sequence_lengths)
    assert (grouped.kept_patches is None) == (whole.kept_patches is None)
    if whole.kept_patches is not None:
        assert torch.equal(grouped.kept_patches, whole.kept_patches)


def test_q8_runs_a_large_cpu_batch_as_its_groups_alone():
    """Dynamic int8 scales activations per batch: each group gets the result it gets as a batch of its own."""
    model, pixels = _vit(), torch.randn(14, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    runner = methods.load("q8").bind(model)
    with torch.no_grad():
        grouped = runner(pixels).outputs.pooler_output
        alone = torch.cat([runner.run(pixels[index]).outputs.pooler_output
                           for index in methods.registry.dense_groups(14, "cpu")])
    torch.testing.assert_close(grouped, alone, rtol=0, atol=0)


def test_small_batches_and_tokenizer_methods_are_not_split_by_the_runner():
    assert methods.registry.dense_groups(12, "cpu") is None
    assert methods.registry.dense_groups(13, "cuda") is None
    assert "vwt" not in methods.registry.DENSE_METHODS  # "auto" plans its groups by token count itself


def test_groups_of_a_batch_join_into_one_result_padding_shorter_groups():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from vwt.methods.result import MethodResult, concat_results

    def result(b, t, layers):
        outputs = BaseModelOutputWithPooling(last_hidden_state=torch.ones(b, t, 2), pooler_output=torch.ones(b, 2),
                                             hidden_states=(torch.ones(b, t, 2),))
        return MethodResult(outputs, layers, torch.full((b,), t), token_sizes=torch.ones(b, t, dtype=torch.long))

    joined = concat_results([result(2, 3, (4.0, 3.0)), result(1, 2, (1.0, 1.0))])
    assert joined.outputs.last_hidden_state.shape == (3, 3, 2) and joined.outputs.last_hidden_state[2, 2].eq(0).all()
    assert joined.outputs.hidden_states[0].shape == (3, 3, 2)
    assert joined.token_sizes.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]  # padding has size 0
    assert joined.tokens_per_layer == pytest.approx((3.0, 7 / 3))  # the mean over the three images
    assert joined.sequence_lengths.tolist() == [3, 3, 2] and joined.source is None
    with pytest.raises(TypeError, match="cannot join outputs of type str"):
        concat_results([MethodResult("a", (1.0,), torch.ones(1)), MethodResult("b", (1.0,), torch.ones(1))])


def test_a_token_budget_batch_of_one_length_runs_in_groups_with_each_image_its_own_result():
    model, pixels = _vit(), torch.randn(14, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        auto = methods.load("intra", keep=0.5).bind(model)(pixels)  # 14 images of 9 tokens: groups on CPU
        padded = methods.load("intra", keep=0.5, batching="pad").bind(model)(pixels)
    torch.testing.assert_close(auto.outputs.last_hidden_state, padded.outputs.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert auto.tokens_per_layer == padded.tokens_per_layer == (9,) * 4
