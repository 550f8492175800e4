"""Drawing tokens over images (:mod:`.draw`) and rendering a method's tokens for one image (:mod:`.render`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .draw import (
        draw_tokens,
        image_from_pixel_values,
        merged_colour_index,
        palette,
        save_png,
        side_by_side,
        source_to_patch_to_token,
    )
    from .render import (
        Rendered,
        compose,
        load_image,
        render_intra,
        render_tome,
        render_vwt,
    )

_LAZY = {
    "Rendered": ".render",
    "compose": ".render",
    "draw_tokens": ".draw",
    "image_from_pixel_values": ".draw",
    "load_image": ".render",
    "merged_colour_index": ".draw",
    "palette": ".draw",
    "render_intra": ".render",
    "render_tome": ".render",
    "render_vwt": ".render",
    "save_png": ".draw",
    "side_by_side": ".draw",
    "source_to_patch_to_token": ".draw",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
