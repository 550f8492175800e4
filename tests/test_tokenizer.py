import pytest
import torch
from transformers import BatchFeature, BitImageProcessorPil

from vwt import VisualVocabulary, VocabularyConfig
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer


def _tiny_vocab(k=5, patch_size=4, seed=0):
    torch.manual_seed(seed)
    config = VocabularyConfig(
        k=k, patch_size=patch_size, num_channels=3, preprocess=preprocess_config(default_image_processor())
    )
    return VisualVocabulary(torch.randn(k, 3 * patch_size**2), config)


def test_visual_word_tokenizer_returns_a_batch_feature_with_consistent_fields():
    tokenizer = VisualWordTokenizer(_tiny_vocab(), threshold=0.9)
    batch = tokenizer(pixel_values=torch.randn(3, 3, 16, 16))
    assert isinstance(batch, BatchFeature)
    b, n = 3, 16
    assert batch["patch_to_token"].shape == (b, n) and batch["patch_to_token"].dtype == torch.int64
    t = int(batch["num_tokens"].max())
    assert batch["attention_mask"].shape == (b, 1 + t)
    assert batch["word_ids"].shape == (b, t)
    assert batch["attention_mask"].sum(1).tolist() == (batch["num_tokens"] + 1).tolist()
    assert batch["token_sizes"].shape == (b, t) and batch["token_sizes"].dtype == torch.int64
    assert batch["token_sizes"].sum(1).tolist() == [n] * b  # every patch in exactly one token
    assert torch.equal(batch["token_sizes"] > 0, batch["attention_mask"][:, 1:] == 1)  # 0 only for padding
    for i in range(b):  # every token of an image has at least one patch; tokens are 0..num_tokens-1
        assert sorted(set(batch["patch_to_token"][i].tolist())) == list(range(int(batch["num_tokens"][i])))


def test_threshold_minus_one_keeps_every_patch_in_raster_order():
    batch = VisualWordTokenizer(_tiny_vocab(), threshold=-1.0)(pixel_values=torch.randn(2, 3, 16, 16))
    assert batch["patch_to_token"].tolist() == [list(range(16))] * 2
    assert (batch["word_ids"] == -1).all()


def test_a_large_threshold_merges_all_patches_into_at_most_k_tokens():
    batch = VisualWordTokenizer(_tiny_vocab(k=5), threshold=2.0)(pixel_values=torch.randn(2, 3, 16, 16))
    assert (batch["num_tokens"] <= 5).all()
    assert (batch["word_ids"][batch["attention_mask"][:, 1:] == 1] >= 0).all()


def test_tokens_of_a_word_share_the_word_id_reported():
    vocab = _tiny_vocab(k=3)
    tokenizer = VisualWordTokenizer(vocab, threshold=0.95)
    pixels = torch.randn(2, 3, 16, 16)
    batch = tokenizer(pixel_values=pixels)
    from vwt.patches import patchify
    from vwt.tokenize.matching import match_words

    word_ids = match_words(patchify(pixels, 4), vocab.centroids, 0.95)
    assert torch.equal(batch["word_ids"].gather(1, batch["patch_to_token"]), word_ids)


def test_intra_image_tokenizer_keeps_the_highest_variance_patches():
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[0, :, 4:, 4:] = torch.randn(3, 4, 4)  # only the last patch is textured
    batch = IntraImageTokenizer(max_tokens=1, patch_size=4)(pixel_values=pixels)
    assert batch["patch_to_token"].tolist() == [[-1, -1, -1, 0]]
    assert IntraImageTokenizer(keep=0.5, patch_size=4)(pixel_values=pixels)["num_tokens"].tolist() == [2]
    assert IntraImageTokenizer(keep=0.5, patch_size=4)(pixel_values=pixels)["token_sizes"].tolist() == [[1, 1]]
    assert IntraImageTokenizer(keep=1.0, patch_size=4)(pixel_values=pixels)["patch_to_token"].tolist() == [[0, 1, 2, 3]]


def test_tokenizers_preprocess_pil_images_with_the_vocabularys_processor(sample_vocab_dir, sample_photos):
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.2)
    batch = tokenizer([image for _, image in sample_photos[:2]])
    assert batch["pixel_values"].shape == (2, 3, 224, 224)
    assert batch["patch_to_token"].shape == (2, 196)
    assert (batch["num_tokens"] < 196).all()


def test_save_and_load_keep_the_threshold(tmp_path, sample_vocab_dir):
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.25)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = VisualWordTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.threshold == 0.25
    assert torch.equal(loaded.vocabulary.centroids, tokenizer.vocabulary.centroids)
    assert VisualWordTokenizer.from_pretrained(tmp_path / "tok", threshold=0.5).threshold == 0.5
    assert VisualWordTokenizer.from_pretrained(sample_vocab_dir).threshold == 0.1  # a bare vocabulary: default


def test_bad_inputs_are_clear_errors():
    tokenizer = VisualWordTokenizer(_tiny_vocab(), threshold=0.1)
    with pytest.raises(ValueError, match="empty batch"):
        tokenizer([])
    with pytest.raises(ValueError, match="NaN"):
        tokenizer(pixel_values=torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="4 channels"):
        tokenizer(pixel_values=torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        tokenizer(pixel_values=torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="exactly one"):
        tokenizer()
    with pytest.raises(TypeError, match="pass them as pixel_values="):
        tokenizer(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="fraction"):
        IntraImageTokenizer(keep=1.5)
    with pytest.raises(ValueError, match="more than the 16 patches"):
        IntraImageTokenizer(max_tokens=17, patch_size=4)(pixel_values=torch.randn(1, 3, 16, 16))


def test_a_processor_with_another_normalization_is_refused():
    imagenet = BitImageProcessorPil(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    with pytest.raises(ValueError, match="use a vocabulary built with this model's processor"):
        VisualWordTokenizer(_tiny_vocab(), image_processor=imagenet)


# --- token budgets ----------------------------------------------------------------------------------


def test_a_token_budget_gives_every_image_the_same_length_without_padding():
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pixels[0] = 0.5  # a flat image: one word for all its patches, then single patches up to the budget
    for tokenizer in (VisualWordTokenizer(_tiny_vocab(), max_tokens=7), VisualWordTokenizer(_tiny_vocab(), keep=0.45)):
        batch = tokenizer(pixel_values=pixels)  # round(0.45 * 16) = 7
        assert batch["num_tokens"].tolist() == [7, 7, 7]
        assert batch["attention_mask"].shape == (3, 8) and (batch["attention_mask"] == 1).all()
        assert (batch["token_sizes"].sum(1) == 16).all() and (batch["token_sizes"] >= 1).all()
    every_patch = VisualWordTokenizer(_tiny_vocab(), max_tokens=16)(pixel_values=pixels)
    assert every_patch["patch_to_token"].tolist() == [list(range(16))] * 3


def test_bad_budgets_are_clear_errors():
    vocab = _tiny_vocab()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_tokens must be a whole number of tokens, at least 1"):
            VisualWordTokenizer(vocab, max_tokens=bad)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"keep must be a fraction of the patches in \(0, 1\]"):
            VisualWordTokenizer(vocab, keep=bad)
    with pytest.raises(ValueError, match="not both"):
        VisualWordTokenizer(vocab, max_tokens=4, keep=0.5)
    with pytest.raises(ValueError, match="a token budget replaces the threshold"):
        VisualWordTokenizer(vocab, threshold=0.1, max_tokens=4)
    with pytest.raises(ValueError, match="max_tokens=17 is more than the 16 patches"):
        VisualWordTokenizer(vocab, max_tokens=17)(pixel_values=torch.randn(1, 3, 16, 16))


def test_save_and_load_keep_the_budget_and_arguments_replace_the_saved_settings(tmp_path, sample_vocab_dir):
    VisualWordTokenizer.from_pretrained(sample_vocab_dir, max_tokens=64).save_pretrained(tmp_path / "budget")
    loaded = VisualWordTokenizer.from_pretrained(tmp_path / "budget")
    assert (loaded.config.max_tokens, loaded.config.keep, loaded.threshold) == (64, None, None)
    assert "max_tokens=64" in (tmp_path / "budget" / "README.md").read_text()
    assert VisualWordTokenizer.from_pretrained(tmp_path / "budget", threshold=0.3).config.max_tokens is None
    VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3).save_pretrained(tmp_path / "threshold")
    assert VisualWordTokenizer.from_pretrained(tmp_path / "threshold", keep=0.5).config.keep == 0.5
