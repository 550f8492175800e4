"""The streaming k-means of a vocabulary build: ``MiniBatchKMeans.partial_fit`` over patch arrays, resumable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KMEANS_SCALARS", "KMeansStream"]

KMEANS_SCALARS = ("n_steps_", "_n_since_last_reassign", "_batch_size", "_init_size", "_tol", "_n_init",
                  "n_features_in_", "_n_features_out")
"""MiniBatchKMeans attributes that partial_fit reads on its next call (scikit-learn 1.4 - 1.9), besides the
arrays: the only attributes a checkpoint restores."""


def _new_kmeans(k: int, batch_size: int, seed: int, init: np.ndarray) -> Any:
    from sklearn.cluster import MiniBatchKMeans

    # compute_labels=False: the labels of each mini-batch are never used and cost a second pass over it.
    return MiniBatchKMeans(n_clusters=k, batch_size=batch_size, random_state=seed, n_init=1, init=init,
                           compute_labels=False)


@dataclass
class KMeansStream:
    """``MiniBatchKMeans.partial_fit`` over a stream of patch arrays, in batches of ``batch_size`` patches.

    The first call gets at least ``k`` patches and is seeded by k-means++ in float64 on its first
    ``max(3k, batch_size)`` patches (scikit-learn's own float32 path is several times slower for k in the
    thousands). Patches that do not fill a batch wait in ``buffer`` (part of a checkpoint).
    """

    k: int
    batch_size: int
    seed: int
    kmeans: Any = None
    buffer: list[np.ndarray] = field(default_factory=list)

    @property
    def buffered(self) -> int:
        """Patches waiting for the next ``partial_fit``."""
        return sum(len(b) for b in self.buffer)

    def _fit(self, patches: np.ndarray) -> None:
        if self.kmeans is None:
            from sklearn.cluster import kmeans_plusplus

            sample = patches[: max(3 * self.k, self.batch_size)].astype(np.float64)
            centers, _ = kmeans_plusplus(sample, self.k, random_state=self.seed)
            self.kmeans = _new_kmeans(self.k, self.batch_size, self.seed, centers.astype(np.float32))
        self.kmeans.partial_fit(patches)

    def add(self, patches: np.ndarray) -> None:
        """Queue ``[n, D]`` float32 patches; fit every full batch."""
        if len(patches):
            self.buffer.append(patches)
        while self.buffered >= max(self.batch_size, self.k if self.kmeans is None else 0):
            stacked = np.concatenate(self.buffer)
            take = len(stacked) if self.kmeans is None else self.batch_size
            self._fit(stacked[:take])
            self.buffer = [stacked[take:]] if take < len(stacked) else []

    def finish(self) -> np.ndarray | None:
        """Fit what is left (if it can be) and return the ``[k, D]`` centroids, or ``None`` if never fitted."""
        if self.buffer and (self.kmeans is not None or self.buffered >= self.k):
            self._fit(np.concatenate(self.buffer))
            self.buffer = []
        return None if self.kmeans is None else self.kmeans.cluster_centers_

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, json)``: everything needed to continue exactly where this stream is."""
        arrays: dict[str, np.ndarray] = {}
        if self.buffer:
            arrays["buffer"] = np.ascontiguousarray(np.concatenate(self.buffer))
        if self.kmeans is None:
            return arrays, {"fitted": False}
        km = self.kmeans
        name, keys, pos, has_gauss, cached = km._random_state.get_state()
        arrays |= {"cluster_centers": km.cluster_centers_, "counts": km._counts, "random_state_keys": keys}
        scalars = {name_: getattr(km, name_) for name_ in KMEANS_SCALARS}
        rng = {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
        scalars = {key: value.item() if isinstance(value, np.generic) else value for key, value in scalars.items()}
        return arrays, {"fitted": True, "scalars": scalars, "random_state": rng}

    def load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Restore :meth:`state` into this stream (the MiniBatchKMeans from its arrays, not from a pickle).

        The state must have been checked first (:func:`vwt.vocab.resume.check_state`); only the attributes
        named in :data:`KMEANS_SCALARS` are set.
        """
        self.buffer = [arrays["buffer"]] if "buffer" in arrays else []
        if not state["fitted"]:
            self.kmeans = None
            return
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        centers = arrays["cluster_centers"]
        km = _new_kmeans(self.k, self.batch_size, self.seed, centers.copy())
        km.cluster_centers_ = centers.copy()
        km._counts = arrays["counts"].copy()
        for name in KMEANS_SCALARS:
            setattr(km, name, state["scalars"][name])
        km._n_threads = _openmp_effective_n_threads()
        rng = state["random_state"]
        km._random_state = np.random.RandomState()
        km._random_state.set_state((rng["name"], arrays["random_state_keys"].astype(np.uint32), rng["pos"],
                                    rng["has_gauss"], rng["cached_gaussian"]))
        self.kmeans = km
