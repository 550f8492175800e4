"""SigLIP and BLIP adapters: tiny random models, unmodified, reproduced exactly and padding-invariant."""

import pytest
import torch
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipVisionModel,
    SiglipConfig,
    SiglipForImageClassification,
    SiglipModel,
    SiglipVisionModel,
)

from vwt.config import VocabularyConfig
from vwt.encoders import VisualWordModel, adapter_for
from vwt.encoders.batching import BATCHING
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.vocabulary import VisualVocabulary

PATCH = 8
IMAGE = 32  # 4 x 4 = 16 patches
TIGHT = {"rtol": 1e-5, "atol": 1e-5}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
# BLIP's default special ids (bos 30522, sep 102) lie outside a tiny vocabulary.
BLIP_TEXT = {**TINY, "vocab_size": 99, "max_position_embeddings": 32, "bos_token_id": 1, "eos_token_id": 2,
             "sep_token_id": 3, "pad_token_id": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _siglip_config(**kwargs):
    text = {**TINY, "vocab_size": 99, "max_position_embeddings": 16}
    vision = {**TINY, "image_size": IMAGE, "patch_size": PATCH}
    return SiglipConfig(text_config=text, vision_config=vision, **kwargs)


def _blip_config():
    # BLIP's vision default initializer_range is 1e-10: near-zero weights make every image look alike.
    vision = {**TINY, "image_size": IMAGE, "patch_size": PATCH, "initializer_range": 0.05}
    text = {**BLIP_TEXT, "initializer_range": 0.1}
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=32)


def _build(cls, config, attn="eager"):
    """A tiny random model whose norms and logit scale/bias are not the identity (so each one is tested)."""
    torch.manual_seed(0)
    model = cls._from_config(config, attn_implementation=attn)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
        if hasattr(model, "logit_bias"):
            model.logit_scale.fill_(0.7)
            model.logit_bias.fill_(-1.3)
    return model.float().eval()


@pytest.fixture(scope="module")
def siglip_vision():
    return _build(SiglipVisionModel, _siglip_config().vision_config)


@pytest.fixture(scope="module")
def siglip():
    return _build(SiglipModel, _siglip_config())


@pytest.fixture(scope="module")
def siglip_classifier():
    return _build(SiglipForImageClassification, _siglip_config(num_labels=5))


@pytest.fixture(scope="module")
def blip_vision():
    return _build(BlipVisionModel, _blip_config().vision_config)


@pytest.fixture(scope="module")
def blip():
    return _build(BlipForConditionalGeneration, _blip_config())


def _tokenizer(threshold, k=8):
    """A tiny random vocabulary (its image size need not match: the tests pass pixel_values)."""
    preprocess = preprocess_config(default_image_processor())
    words = torch.randn(k, 3 * PATCH * PATCH, generator=torch.Generator().manual_seed(1))
    vocabulary = VisualVocabulary(words, VocabularyConfig(k=k, patch_size=PATCH, num_channels=3, preprocess=preprocess))
    return VisualWordTokenizer(vocabulary, threshold=threshold)


@pytest.fixture(scope="module")
def pixel_values():
    return torch.randn(3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def mixed_pixel_values():
    """A constant image (one token), a mostly constant one and a random one: different token counts."""
    images = torch.randn(3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    images[0] = 0.5
    images[1, :, : 3 * IMAGE // 4] = -0.3
    return images


@pytest.fixture(scope="module")
def padded_batch(mixed_pixel_values):
    batch = _tokenizer(threshold=2.0)(pixel_values=mixed_pixel_values)
    counts = batch["num_tokens"].tolist()
    assert len(set(counts)) == 3 and min(counts) == 1, counts  # the batch really is padded
    return batch


def _alone(batch, i):
    tokenizer = _tokenizer(threshold=2.0)
    return tokenizer(pixel_values=batch["pixel_values"][i : i + 1])


def _text_ids():
    input_ids = torch.randint(4, 99, (2, 7), generator=torch.Generator().manual_seed(4))
    text_mask = torch.ones_like(input_ids)
    text_mask[1, 5:] = 0
    return input_ids, text_mask


# --- the unmodified model, reproduced -------------------------------------------------------------

UNMERGED = [_tokenizer(threshold=-1.0), IntraImageTokenizer(keep=1.0, patch_size=PATCH)]


@pytest.mark.parametrize("tokenizer", UNMERGED, ids=["visual-words", "intra-image"])
@pytest.mark.parametrize("name", ["siglip_vision", "siglip", "blip_vision", "blip"])
def test_unmerged_tokens_reproduce_the_vision_outputs(request, name, tokenizer, pixel_values):
    model = request.getfixturevalue(name)
    batch = tokenizer(pixel_values=pixel_values)
    with torch.no_grad():
        ours = VisualWordModel(model)(batch)
        vision = model if name.endswith("vision") else model.vision_model
        theirs = vision(pixel_values=pixel_values)
    assert not torch.allclose(theirs.pooler_output[0], theirs.pooler_output[1], atol=1e-2)  # images differ
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, **TIGHT)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, **TIGHT)


def test_unmerged_tokens_reproduce_siglip_zero_shot_logits(siglip, pixel_values):
    input_ids, text_mask = _text_ids()
    batch = _tokenizer(threshold=-1.0)(pixel_values=pixel_values)
    with torch.no_grad():
        ours = VisualWordModel(siglip)(batch, input_ids=input_ids, text_attention_mask=text_mask)
        theirs = siglip(input_ids=input_ids, pixel_values=pixel_values, attention_mask=text_mask)
    assert ours.logits_per_image.shape == (3, 2)
    torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image, **TIGHT)
    torch.testing.assert_close(ours.logits_per_text, theirs.logits_per_text, **TIGHT)
    torch.testing.assert_close(ours.image_embeds, theirs.image_embeds, **TIGHT)


def test_unmerged_tokens_reproduce_siglip_classification(siglip_classifier, pixel_values):
    batch = _tokenizer(threshold=-1.0)(pixel_values=pixel_values)
    with torch.no_grad():
        ours = VisualWordModel(siglip_classifier)(batch)
        theirs = siglip_classifier(pixel_values=pixel_values)
    torch.testing.assert_close(ours.logits, theirs.logits, **TIGHT)


def test_unmerged_tokens_reproduce_blip_text_logits(blip, pixel_values):
    input_ids = torch.randint(4, 99, (3, 5), generator=torch.Generator().manual_seed(5))
    batch = IntraImageTokenizer(keep=1.0, patch_size=PATCH)(pixel_values=pixel_values)
    with torch.no_grad():
        ours = VisualWordModel(blip)(batch, input_ids=input_ids)
        theirs = blip(pixel_values=pixel_values, input_ids=input_ids)
    torch.testing.assert_close(ours.logits, theirs.logits, **TIGHT)
    torch.testing.assert_close(ours.image_embeds, theirs.image_embeds, **TIGHT)


@pytest.mark.parametrize("tokenizer", UNMERGED, ids=["visual-words", "intra-image"])
def test_unmerged_tokens_reproduce_blip_greedy_captions(blip, tokenizer, pixel_values):
    batch = tokenizer(pixel_values=pixel_values)
    ours = VisualWordModel(blip).generate(batch, max_new_tokens=6)
    theirs = blip.generate(pixel_values=pixel_values, max_new_tokens=6)
    assert ours.shape[1] > 1
    assert torch.equal(ours, theirs)


def test_blip_prompted_captions_match_the_model_and_leave_the_prompt_alone(blip, pixel_values):
    prompt = torch.tensor([[1, 17, 42, 3]]).repeat(3, 1)  # [BOS]-like, two words, [SEP]
    prompt_mask = torch.ones_like(prompt)
    given = prompt.clone()
    batch = _tokenizer(threshold=-1.0)(pixel_values=pixel_values)
    ours = VisualWordModel(blip).generate(batch, input_ids=prompt, text_attention_mask=prompt_mask, max_new_tokens=4)
    assert torch.equal(prompt, given)
    theirs = blip.generate(pixel_values=pixel_values, input_ids=prompt.clone(), attention_mask=prompt_mask,
                           max_new_tokens=4)
    assert torch.equal(ours, theirs)


# --- padding: each image as if alone ----------------------------------------------------------------


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", ["siglip_vision", "siglip", "blip_vision", "blip"])
def test_a_padded_batch_gives_each_image_its_own_outputs(request, name, padded_batch, batching):
    model = request.getfixturevalue(name)
    if batching == "ragged" and name.startswith("blip"):  # BLIP's adapter drives whole layers, not their parts
        with pytest.raises(ValueError, match="batching='ragged' drives each layer from its parts"):
            VisualWordModel(model, batching=batching)
        return
    with torch.no_grad():
        batched = VisualWordModel(model, batching=batching)(padded_batch)
        prefix = adapter_for(model).num_prefix_tokens
        for i, n in enumerate(padded_batch["num_tokens"].tolist()):
            alone = VisualWordModel(model)(_alone(padded_batch, i))
            assert alone.last_hidden_state.shape[1] == prefix + n
            torch.testing.assert_close(batched.last_hidden_state[i, : prefix + n], alone.last_hidden_state[0], **TIGHT)
            torch.testing.assert_close(batched.pooler_output[i], alone.pooler_output[0], **TIGHT)


def test_a_padded_batch_gives_each_image_its_own_siglip_logits(siglip, siglip_classifier, padded_batch):
    input_ids, text_mask = _text_ids()
    with torch.no_grad():
        batched = VisualWordModel(siglip)(padded_batch, input_ids=input_ids, text_attention_mask=text_mask)
        classes = VisualWordModel(siglip_classifier)(padded_batch).logits
        for i in range(3):
            alone = _alone(padded_batch, i)
            logits = VisualWordModel(siglip)(alone, input_ids=input_ids, text_attention_mask=text_mask)
            torch.testing.assert_close(batched.logits_per_image[i], logits.logits_per_image[0], **TIGHT)
            torch.testing.assert_close(classes[i], VisualWordModel(siglip_classifier)(alone).logits[0], **TIGHT)


def test_a_padded_batch_gives_each_image_its_own_blip_caption(blip, padded_batch):
    pad = blip.config.text_config.pad_token_id
    batched = VisualWordModel(blip).generate(padded_batch, max_new_tokens=6)
    for i in range(3):
        alone = VisualWordModel(blip).generate(_alone(padded_batch, i), max_new_tokens=6)[0]
        row = batched[i, : len(alone)]
        assert torch.equal(row, alone)
        assert (batched[i, len(alone) :] == pad).all()


def test_a_padded_batch_gives_each_image_its_own_blip_beams(blip, padded_batch):
    kwargs = {"max_new_tokens": 4, "num_beams": 2, "num_return_sequences": 2}
    batched = VisualWordModel(blip).generate(padded_batch, **kwargs)
    assert batched.shape[0] == 6
    for i in range(3):
        alone = VisualWordModel(blip).generate(_alone(padded_batch, i), **kwargs)
        assert torch.equal(batched[2 * i : 2 * i + 2, : alone.shape[1]], alone)


def test_a_padded_batch_gives_each_image_its_own_blip_text_logits(blip, padded_batch):
    input_ids = torch.tensor([[1, 17, 42, 8]]).repeat(3, 1)
    text_mask = torch.ones_like(input_ids)
    text_mask[2, 3:] = 0
    with torch.no_grad():
        batched = VisualWordModel(blip)(padded_batch, input_ids=input_ids, text_attention_mask=text_mask).logits
        for i in range(3):
            alone = VisualWordModel(blip)(_alone(padded_batch, i), input_ids=input_ids[i : i + 1],
                                          text_attention_mask=text_mask[i : i + 1]).logits
            torch.testing.assert_close(batched[i], alone[0], **TIGHT)


@pytest.mark.xfail(strict=True, reason="transformers 5.23: BlipTextAttention never passes encoder_attention_mask on to "
                          "BlipTextSelfAttention, so BLIP's decoder ignores it (the adapter buckets by length)")
def test_the_blip_text_decoder_honours_encoder_attention_mask(blip):
    image = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    input_ids = torch.tensor([[1, 17, 42]])
    with torch.no_grad():
        masked = blip.text_decoder(input_ids=input_ids, encoder_hidden_states=image, encoder_attention_mask=mask)
        cut = blip.text_decoder(input_ids=input_ids, encoder_hidden_states=image[:, :3])
    torch.testing.assert_close(masked.logits, cut.logits, **TIGHT)


# --- attention implementations ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SiglipVisionModel, SiglipModel])
def test_siglip_eager_and_sdpa_agree_on_a_padded_batch(cls, padded_batch):
    config = _siglip_config()
    config = config.vision_config if cls is SiglipVisionModel else config
    eager, sdpa = _build(cls, config, "eager"), _build(cls, config, "sdpa")
    assert adapter_for(sdpa).vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        a, b = VisualWordModel(eager)(padded_batch), VisualWordModel(sdpa)(padded_batch)
    real = padded_batch["attention_mask"][:, 1:].bool()
    torch.testing.assert_close(a.last_hidden_state[real], b.last_hidden_state[real], **TIGHT)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, **TIGHT)


def test_blip_refuses_sdpa_and_its_vision_mask_works_in_either_format(blip, padded_batch):
    """BLIP has no SDPA attention; its vision layers take the eager (float) or the SDPA (bool) mask alike."""
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        BlipForConditionalGeneration._from_config(_blip_config(), attn_implementation="sdpa")
    vision_config = blip.vision_model.config
    with torch.no_grad():  # the paper's masks (proportional attention always builds a float mask)
        eager = VisualWordModel(blip, proportional_attention=False)(padded_batch)
        vision_config._attn_implementation = "sdpa"  # only changes the mask format the runner builds
        try:
            as_bool = VisualWordModel(blip, proportional_attention=False)(padded_batch)
        finally:
            vision_config._attn_implementation = "eager"
    real = padded_batch["attention_mask"].bool()
    torch.testing.assert_close(eager.last_hidden_state[real], as_bool.last_hidden_state[real], **TIGHT)
    torch.testing.assert_close(eager.pooler_output, as_bool.pooler_output, **TIGHT)


# --- errors -----------------------------------------------------------------------------------------


def test_models_without_a_text_tower_say_so(siglip_vision, blip_vision, padded_batch):
    with pytest.raises(TypeError, match="no text tower"):
        VisualWordModel(siglip_vision)(padded_batch, input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="no text decoder"):
        VisualWordModel(blip_vision).generate(padded_batch)
    with pytest.raises(TypeError, match="does not generate text"):
        VisualWordModel(siglip_vision).generate(padded_batch)


# --- size-aware attention ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["siglip_vision", "siglip_classifier", "blip_vision"])
def test_a_token_of_size_s_counts_as_s_copies_in_the_layers_and_the_pooling(request, name, mixed_pixel_values):
    """log(s) on a key's logit (layers, SigLIP's attention pool) and weight s in SigLIP's classifier mean
    are exactly s identical copies of the token."""
    from vwt.encoders.run import run_layers

    model = request.getfixturevalue(name)
    wrapped = VisualWordModel(model)
    batch = _tokenizer(threshold=2.0)(pixel_values=mixed_pixel_values[1:2])
    assert batch["token_sizes"].max() > 1
    with torch.no_grad():
        merged = wrapped(batch)
        tokens = wrapped.embed(batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"])
        copies = run_layers(wrapped.adapter.layers, tokens.hidden[0].repeat_interleave(tokens.sizes[0], dim=0)[None],
                            None)
        expected = wrapped.adapter.outputs(copies, torch.ones(copies.shape[:2], dtype=torch.long))
    first_copy = tokens.sizes[0].cumsum(0) - tokens.sizes[0]
    if name == "siglip_classifier":  # float32 rounding of the same arithmetic in another order
        torch.testing.assert_close(merged.logits, expected.logits, **TIGHT)
        return
    torch.testing.assert_close(merged.last_hidden_state[0], expected.last_hidden_state[0, first_copy], **TIGHT)
    torch.testing.assert_close(merged.pooler_output, expected.pooler_output, **TIGHT)
