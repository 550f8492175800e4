"""JPEG draft decoding: faster on large files, and the processor's output stays within its own tolerance."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vwt.patches import patchify
from vwt.preprocess import default_image_processor, preprocess_images
from vwt.vocab.data import ImageRecord
from vwt.vocab.decode import ChunkJob, draft_scale, open_image, process_chunk

CLIP_RESIZE = {"shortest_edge": 224}


def test_the_draft_scale_keeps_four_pixels_per_output_pixel_and_divides_both_sides():
    assert draft_scale((4000, 3000), CLIP_RESIZE) == 2  # 1/4 would leave 750 < 4 * 224 on the short side
    assert draft_scale((8000, 6000), CLIP_RESIZE) == 4
    assert draft_scale((500, 375), CLIP_RESIZE) == 1  # ImageNet-sized: decoded at full size
    assert draft_scale((7202, 5402), CLIP_RESIZE) == 2  # 1/4 does not divide 7202: it would shift the image
    assert draft_scale((4000, 3000), {"height": 224, "width": 224}) == 2
    assert draft_scale((4000, 3000), None) == 1  # a processor that does not resize


@pytest.fixture(scope="module")
def large_jpegs(sample_photos):
    """Real photos as 4000x3000 JPEGs (a camera's size), including the finest texture (grass), the worst case."""
    chosen = dict(sample_photos)
    files = []
    for name in ("skimage/grass", "skimage/astronaut", "sklearn/china.jpg"):
        image = Image.fromarray(np.asarray(chosen[name])).convert("RGB").resize((4000, 3000), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def test_draft_decoding_stays_within_the_processors_own_tolerance(large_jpegs):
    processor = default_image_processor()
    full = preprocess_images([open_image({"bytes": data}) for data in large_jpegs], processor)
    drafted_images = [open_image({"bytes": data}, CLIP_RESIZE) for data in large_jpegs]
    assert all(image.size == (2000, 1500) for image in drafted_images)  # really decoded at 1/2 scale
    drafted = preprocess_images(drafted_images, processor)
    difference = (drafted - full).abs()
    # Max: 0.1, the tolerance transformers' own tests allow between the two backends (PIL, torchvision)
    # of one image processor (test_slow_fast_equivalence, atol=1e-1).
    assert difference.max() <= 0.1
    # Mean: the processor's own rounding. It resizes in 8 bits, so its output is off by up to half a level,
    # a quarter level on average: 0.25 / 255 / std, with the smallest CLIP std the largest step.
    own_rounding = 0.25 / 255 / min(processor.image_std)
    assert difference.mean(dim=(1, 2, 3)).max() <= own_rounding


def test_a_chunk_is_processed_the_same_wherever_it_is_processed(sample_photos):
    job = ChunkJob(default_image_processor(), 16, patches_per_image=10, seed=7)
    records = [ImageRecord(name, image) for name, image in sample_photos[:3]] + [ImageRecord("bad", error="broken")]
    first, again = process_chunk(job, 5, records), process_chunk(job, 5, records)
    other = process_chunk(job, 6, records)
    assert np.array_equal(first.patches, again.patches) and first.patches.shape == (30, 768)
    assert not np.array_equal(first.patches, other.patches)  # the sample depends on the chunk's number
    assert first.num_images == 3 and first.skipped == [("bad", "broken")]
    rows = torch.from_numpy(first.patches)
    pixels = preprocess_images([image for _, image in sample_photos[:3]], job.processor)
    all_patches = patchify(pixels, 16).reshape(-1, 768)
    # Every sampled patch is one of the image's real patches (sampling picks, never mixes).
    distance = ((rows[:, None, :] - all_patches[None]) ** 2).sum(-1)  # exact, unlike cdist's matmul path
    assert (distance.min(dim=1).values == 0).all()
