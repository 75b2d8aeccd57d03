"""Exact Euclidean distance and feature transform (Numba, CPU).

``distance_transform_edt`` is a drop-in for ``scipy.ndimage.distance_transform_edt``
on 1-, 2- and 3-D arrays; ``distance_transform_edt_batch`` does the same for a
stack of equally shaped arrays, in parallel across the cores.

Semantics (those of SciPy):

* every **non-zero** element gets the Euclidean distance to the nearest **zero**
  element; zero elements get 0 and their own index;
* ``sampling`` is the spacing along each axis (a number, or one per axis);
* ``indices`` has SciPy's layout ``(ndim, *shape)`` (``int32``): ``indices[:, p]``
  is the coordinate of a nearest zero of ``p``.  Where several zeros are equally
  near, any one of them may be returned (SciPy may pick another one);
* **no zero at all**: SciPy (checked with 1.17) then reports for every element
  the point ``(-1, 0, ..., 0)`` just before the array along axis 0, and the
  distance to it.  We return exactly the same, so ported code behaves the same;
  test ``(input == 0).any()`` if that case matters to you;
* distances are ``float64`` and equal SciPy's bit for bit when the returned
  nearest zeros agree (always with unit sampling); anisotropic near-ties may
  differ in the last bit.

Differences from SciPy: no ``distances=``/``indices=`` output arguments, at most
3 dimensions, and bad arguments raise ``ValueError``/``TypeError`` (SciPy raises
``RuntimeError`` for some).  The algorithm is the separable linear-time lower
envelope of parabolas (Felzenszwalb & Huttenlocher) carrying the nearest-zero
index through every pass; see ``kernels/edt_numba.py``.  The first call in a
fresh environment compiles the kernels (a few seconds; cached on disk after).
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

_MAX_NDIM = 3
# Below this many elements per call the kernels run on one thread. A parallel
# launch costs tens of microseconds on idle cores, but when other jobs hold the
# cores the threads wait for each other: on a shared 2-core machine (load ~15) a
# 2x256x256 call took 4x longer in parallel than on one thread, while a batch of
# 16 512x512 masks still gained.
PARALLEL_MIN_ELEMENTS = 1 << 20


def distance_transform_edt(
    input: np.ndarray,
    sampling: float | Sequence[float] | None = None,
    return_distances: bool = True,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean distance (and feature) transform of one array.

    Args:
        input: array-like of shape ``(n0,)``, ``(n0, n1)`` or ``(n0, n1, n2)``;
            non-zero = foreground (gets a distance), zero = background.
        sampling: spacing per axis; a number applies to every axis; None = 1.
        return_distances: return the distances ``(*shape) float64``.
        return_indices: return the nearest-zero indices ``(ndim, *shape) int32``.

    Returns:
        ``distances``, ``indices``, or ``(distances, indices)`` — as SciPy.
    """
    if not (return_distances or return_indices):
        raise ValueError("at least one of return_distances / return_indices must be True")
    mask = _as_mask("input", input, min_ndim=1)
    spacing = _spacing(sampling, mask.ndim)
    dist, idx = _transform(mask[None], spacing, with_indices=return_indices)
    if return_distances and return_indices:
        return dist[0], idx[0]
    return dist[0] if return_distances else idx[0]


def distance_transform_edt_batch(
    inputs: np.ndarray,
    sampling: float | Sequence[float] | None = None,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``distance_transform_edt`` of every array of a batch, in parallel.

    Args:
        inputs: array-like ``(B, *shape)`` with 1 to 3 image axes (a list of
            equally shaped arrays works too).
        sampling: spacing per *image* axis (``len(shape)`` values) or one number.
        return_indices: also return the indices.

    Returns:
        ``distances (B, *shape) float64``, plus ``indices (B, ndim, *shape) int32``
        when ``return_indices`` (``indices[b]`` is SciPy's layout for image ``b``).
    """
    masks = _as_mask("inputs", inputs, min_ndim=2)
    spacing = _spacing(sampling, masks.ndim - 1)
    dist, idx = _transform(masks, spacing, with_indices=return_indices)
    return (dist, idx) if return_indices else dist


def _as_mask(name: str, value: object, *, min_ndim: int) -> np.ndarray:
    """Non-zero mask of ``value`` as a C-contiguous bool array, with checks."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric or boolean, got dtype {arr.dtype}")
    max_ndim = _MAX_NDIM + min_ndim - 1
    if not min_ndim <= arr.ndim <= max_ndim:
        what = "1-, 2- or 3-D" if min_ndim == 1 else "(B, *shape) with 1 to 3 image axes"
        raise ValueError(f"{name} must be {what}, got shape {arr.shape}")
    return np.ascontiguousarray(arr != 0)


def _spacing(sampling: object, ndim: int) -> tuple[float, ...]:
    """Validate ``sampling`` → one positive finite float per image axis."""
    if sampling is None:
        return (1.0,) * ndim
    if isinstance(sampling, numbers.Real):
        values = [float(sampling)] * ndim
    else:
        try:
            values = [float(s) for s in sampling]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise TypeError(f"sampling must be a number or a sequence of numbers, got {sampling!r}") from None
        if len(values) != ndim:
            raise ValueError(f"sampling must have one value per axis ({ndim}), got {len(values)}: {sampling!r}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"sampling must be positive and finite, got {sampling!r}")
    return tuple(values)


def _transform(
    masks: np.ndarray, spacing: tuple[float, ...], *, with_indices: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distances ``(B, *shape)`` and, optionally, indices ``(B, ndim, *shape)``.

    masks: ``(B, *shape)`` C-contiguous bool, True = non-zero.
    """
    import numba

    from fastmed.kernels import edt_numba as nb

    n_b, shape = masks.shape[0], masks.shape[1:]
    ndim = len(shape)
    idx_dtype = np.int32 if math.prod(shape) < 2**31 else np.int64
    dist = np.empty(masks.shape, np.float64)
    idx = np.empty((n_b, ndim, *shape), idx_dtype) if with_indices else None
    if masks.size == 0:
        return dist, idx
    placeholder = np.empty((1, 1, 1, 1, 1), idx_dtype)

    def lines(axis: int) -> tuple[int, int, int]:
        """(pre, n, inner) of image axis ``axis``: the sizes before, at and after it."""
        return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])

    def idx_view(axis: int) -> np.ndarray:
        return idx.reshape(n_b, ndim, *lines(axis)) if idx is not None else placeholder

    n_threads = numba.get_num_threads() if masks.size >= PARALLEL_MIN_ELEMENTS else 1
    with numba.parallel_chunksize(1):  # parallel parts are taken dynamically (see edt_numba)
        if n_b > 1 and n_b >= 2 * n_threads:
            # whole images per thread: each image's second pass finds it in cache
            n_pix = math.prod(shape)
            nb.transform_images(masks.reshape(n_b, n_pix), dist.reshape(n_b, n_pix),
                                idx.reshape(n_b, ndim, n_pix) if idx is not None else placeholder[0],
                                np.asarray(shape, np.int64), np.asarray(spacing, np.float64), with_indices, n_threads)
        else:  # one image (or fewer than 2 per thread): every pass split across the threads
            _, n0, inner0 = lines(0)
            nb.sweep_first_axis(masks.reshape(n_b, n0, inner0), spacing[0], dist.reshape(n_b, n0, inner0),
                                idx_view(0), with_indices, n_threads)
            for axis in range(1, ndim):
                pre, n, inner = lines(axis)
                nb.envelope_axis(dist.reshape(n_b * pre, n, inner), idx_view(axis), axis, spacing[axis],
                                 with_indices, axis == ndim - 1, n_threads)
            if ndim == 1:
                np.sqrt(dist, out=dist)
    _fill_images_without_zero(dist, idx, spacing)
    return dist, idx


def _fill_images_without_zero(dist: np.ndarray, idx: np.ndarray | None, spacing: tuple[float, ...]) -> None:
    """SciPy's answer for images with no zero: the point (-1, 0, ..., 0), in place.

    An image has a zero iff its first element got a finite distance.
    """
    n_b, shape = dist.shape[0], dist.shape[1:]
    empty = np.flatnonzero(np.isinf(dist.reshape(n_b, -1)[:, 0]))
    if empty.size == 0:
        return
    # SciPy: ((feature - index) * sampling) ** 2 summed over axes in order, then sqrt
    grid = np.indices(shape)
    sq = np.zeros(shape, np.float64)
    for axis, s in enumerate(spacing):
        virtual = -1 if axis == 0 else 0
        d = (virtual - grid[axis]).astype(np.float64) * s
        sq = sq + d * d
    dist[empty] = np.sqrt(sq)
    if idx is not None:
        idx[empty] = 0
        idx[empty, 0] = -1
