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
