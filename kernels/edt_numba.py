"""Numba kernels of the exact Euclidean distance + feature transform.

The transform is separable (Felzenszwalb & Huttenlocher, "Distance Transforms
of Sampled Functions", 2012; the feature variant as in Maurer et al. 2003):

1. ``sweep_first_axis`` — along image axis 0, every element gets its nearest
   zero *on the same line* (two linear sweeps): ``f = (w0 * d0)**2`` and
   coordinate 0 of that zero.
2. ``envelope_axis`` — along each further axis ``a``, the lower envelope of the
   parabolas ``f[q] + (w * (p - q))**2`` (one per element ``q`` of the line with
   finite ``f``) gives, for every ``p``, the minimising ``q``; ``f[p]`` becomes
   that minimum, coordinates ``0..a-1`` are copied from ``q`` and coordinate
   ``a`` is ``q``.  Linear time per line.

The nearest-zero coordinates are written straight into the output index array
``idx (B, ndim, *shape)`` (no flat index to unravel at the end).  The passes
take C-contiguous *views*: ``f`` as ``(outer, n, inner)`` where the processed
axis has length ``n``, ``outer`` gathers the axes before it and ``inner`` those
after it, so a line is ``f[o, :, j]``; ``idx`` as ``(B, ndim, pre, n, inner)``
with ``outer = B * pre``.  Each pass is a serial body over a range of work items
(``_sweep_items``, ``_envelope_items``).  Two drivers run them:

* ``transform_images`` (batches): every pass of one image after the other on
  one thread (``_image_passes``), threads taking whole images — the second
  pass finds the image in cache;
* ``sweep_first_axis`` / ``envelope_axis`` (one image): each pass split into
  parts across the threads.

Both run on the calling thread when given ``n_threads=1``: a parallel launch
costs tens of microseconds (far more when other jobs hold the cores), so the
caller keeps small inputs serial.

``f`` is built as ``((w0*d0)**2 + (w1*d1)**2) + (w2*d2)**2`` with integer
``d`` — the same operations, in the same order, as SciPy's
``distance_transform_edt`` applies to its feature transform, so distances agree
bit for bit whenever the nearest zero has the same offsets (always for unit
sampling).  Elements whose image holds no zero keep ``f = inf`` and undefined
indices; the caller fills those images.  Without indices, ``idx`` is a
placeholder of shape ``(1, 1, 1, 1, 1)`` that is never read.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Columns per work item of the first-axis sweep.
SWEEP_CHUNK = 64
# Parallel parts per thread (load balancing; see ``sweep_first_axis``).
PARTS_PER_THREAD = 8


@njit(cache=True)
def sweep_items(mask):
    """Number of work items of ``_sweep_items`` for mask (B, n, inner)."""
    return mask.shape[0] * ((mask.shape[2] + SWEEP_CHUNK - 1) // SWEEP_CHUNK)


@njit(cache=True)
def _sweep_items(mask, w, f, idx, with_idx, first, last):
    """Nearest zero along image axis 0, for work items ``first..last-1``.

    An item is a block of up to SWEEP_CHUNK columns ``j`` of one image ``b``.
    mask: (B, n, inner) bool, True = non-zero (foreground) element.
    w: sampling (spacing) along this axis.
    f: (B, n, inner) float64 out — squared distance to the nearest zero on the
       line, ``inf`` when the line has none.
    idx: (B, ndim, 1, n, inner) int out — ``idx[b, 0, 0, r, j]`` = row of that
       zero (-1 when none), written when ``with_idx``.
    """
    n_b, n, inner = mask.shape
    n_chunks = (inner + SWEEP_CHUNK - 1) // SWEEP_CHUNK
    near = np.empty(SWEEP_CHUNK, np.int64)
    for item in range(first, last):
        b = item // n_chunks
        j0 = (item % n_chunks) * SWEEP_CHUNK
        width = min(j0 + SWEEP_CHUNK, inner) - j0
        near[:] = -1
        # forward sweep: f holds the distance (in elements) to the last zero seen
        for r in range(n):
            for jj in range(width):
                j = j0 + jj
                if not mask[b, r, j]:
                    near[jj] = r
                f[b, r, j] = r - near[jj] if near[jj] >= 0 else np.inf
            if with_idx:
                for jj in range(width):
                    idx[b, 0, 0, r, j0 + jj] = near[jj]
        # backward sweep: keep the nearer of the previous and the next zero
        near[:] = -1
        for r in range(n - 1, -1, -1):
            for jj in range(width):
                j = j0 + jj
                if not mask[b, r, j]:
                    near[jj] = r
                d = f[b, r, j]
                if near[jj] >= 0 and near[jj] - r < d:
                    d = near[jj] - r
                    if with_idx:
                        idx[b, 0, 0, r, j] = near[jj]
                dw = w * d
                f[b, r, j] = dw * dw


@njit(cache=True)
def _envelope_line(g, n, w, v, z):
    """Lower envelope of ``g[q] + (w*(p-q))**2`` over the finite ``g[q]``.

    g: (n,) squared distances of one line; v: (n,) int out — envelope sites;
    z: (n+1,) float out — ``z[k] <= p <= z[k+1]`` is where site ``v[k]`` wins.
    Returns the number of sites (0 when every ``g`` is inf).
    """
    inv_w2 = 1.0 / (w * w)
    k = -1
    for q in range(n):
        gq = g[q]
        if gq == np.inf:
            continue
        s = -np.inf
        while k >= 0:
            vk = v[k]
            # abscissa where the parabolas of q and v[k] meet (pixel units)
            s = ((gq - g[vk]) * inv_w2 + (q * q - vk * vk)) / (2.0 * (q - vk))
            if s <= z[k]:
                k -= 1
            else:
                break
        if k < 0:
            s = -np.inf
        k += 1
        v[k] = q
        z[k] = s
    z[k + 1] = np.inf
    return k + 1


@njit(cache=True)
def _envelope_items(f, idx, axis, w, with_idx, take_sqrt, first, last):
    """One envelope pass along image axis ``axis`` (>= 1), in place, lines ``first..last-1``.

    f: (outer, n, inner) float64 squared distances (``inf`` allowed), updated;
       line ``l`` is ``f[l // inner, :, l % inner]``.
    idx: (B, ndim, pre, n, inner) int nearest-zero coordinates; coordinates
       ``0..axis-1`` are read, ``0..axis`` written (when ``with_idx``).
    w: sampling along this axis.  take_sqrt: store sqrt(f) (last pass of a request).
    """
    outer, n, inner = f.shape
    pre = idx.shape[2] if with_idx else 1
    g = np.empty(n, np.float64)
    coords = np.empty((axis, n), idx.dtype)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1, np.float64)
    for line in range(first, last):
        o = line // inner
        j = line % inner
        line_f = f[o, :, j]
        for q in range(n):
            g[q] = line_f[q]
        n_sites = _envelope_line(g, n, w, v, z)
        if n_sites == 0:
            continue  # no zero reaches this line yet: f stays inf
        b = o // pre
        o2 = o % pre
        if with_idx:
            for a in range(axis):
                for q in range(n):
                    coords[a, q] = idx[b, a, o2, q, j]
        # site v[k] wins on the pixels z[k] <= p <= z[k+1]: fill segment by segment
        p = 0
        for k in range(n_sites):
            q = v[k]
            end = n if z[k + 1] >= n - 1 else max(p, int(np.floor(z[k + 1])) + 1)
            gq = g[q]
            for pp in range(p, end):
                d = w * (pp - q)
                fp = gq + d * d
                line_f[pp] = np.sqrt(fp) if take_sqrt else fp
            if with_idx:
                for a in range(axis):
                    c = coords[a, q]
                    for pp in range(p, end):
                        idx[b, a, o2, pp, j] = c
                for pp in range(p, end):
                    idx[b, axis, o2, pp, j] = q
            p = end


@njit(cache=True, parallel=True)
def sweep_first_axis(mask, w, f, idx, with_idx, n_threads):
    """Driver of ``_sweep_items`` over every item (arguments as there).

    n_threads: ``numba.get_num_threads()`` or 1 (run on the calling thread, no
    parallel launch at all).  The items are split into up to
    ``PARTS_PER_THREAD * n_threads`` equal parts; called under
    ``numba.parallel_chunksize(1)`` the threads take parts as they free up, so a
    thread that the OS pauses (busy machine) does not hold the others back.
    """
    n_items = sweep_items(mask)
    n_parts = min(n_threads * PARTS_PER_THREAD, n_items)
    if n_threads < 2 or n_parts < 2:  # no parallel region launched at all
        _sweep_items(mask, w, f, idx, with_idx, 0, n_items)
        return
    for t in prange(n_parts):
        _sweep_items(mask, w, f, idx, with_idx, t * n_items // n_parts, (t + 1) * n_items // n_parts)


@njit(cache=True, parallel=True)
def envelope_axis(f, idx, axis, w, with_idx, take_sqrt, n_threads):
    """Driver of ``_envelope_items`` over every line (arguments as there; n_threads as above)."""
    n_lines = f.shape[0] * f.shape[2]
    n_parts = min(n_threads * PARTS_PER_THREAD, n_lines)
    if n_threads < 2 or n_parts < 2:
        _envelope_items(f, idx, axis, w, with_idx, take_sqrt, 0, n_lines)
        return
    for t in prange(n_parts):
        _envelope_items(f, idx, axis, w, with_idx, take_sqrt, t * n_lines // n_parts, (t + 1) * n_lines // n_parts)


@njit(cache=True)
def _image_passes(mask, f, idx, dims, spacing, with_idx):
    """Every pass over one image, on the calling thread (its arrays stay in cache).

    mask: (P,) bool; f: (P,) float64 out (distances); idx: (ndim, P) int out, or a
    (1, 1) placeholder without indices; dims: (ndim,) int64 image shape;
    spacing: (ndim,) float64 sampling.
    """
    ndim = dims.shape[0]
    n_pix = mask.shape[0]
    placeholder = np.empty((1, 1, 1, 1, 1), idx.dtype)
    n0 = dims[0]
    m3 = mask.reshape((1, n0, n_pix // n0))
    ix5 = idx.reshape((1, ndim, 1, n0, n_pix // n0)) if with_idx else placeholder
    _sweep_items(m3, spacing[0], f.reshape((1, n0, n_pix // n0)), ix5, with_idx, 0, sweep_items(m3))
    pre = 1
    for axis in range(1, ndim):
        pre *= dims[axis - 1]
        n = dims[axis]
        inner = n_pix // (pre * n)
        ix5 = idx.reshape((1, ndim, pre, n, inner)) if with_idx else placeholder
        _envelope_items(f.reshape((pre, n, inner)), ix5, axis, spacing[axis], with_idx, axis == ndim - 1, 0, pre * inner)
    if ndim == 1:
        for i in range(n_pix):
            f[i] = np.sqrt(f[i])


@njit(cache=True, parallel=True)
def transform_images(masks, f, idx, dims, spacing, with_idx, n_threads):
    """The whole transform of a batch, image by image (threads take whole images).

    masks: (B, P) bool; f: (B, P) float64 out; idx: (B, ndim, P) int out, or a
    (1, 1, 1) placeholder without indices; dims, spacing: as ``_image_passes``.
    n_threads: 1 = a plain loop on the calling thread; more = ``prange`` over images
    (call under ``numba.parallel_chunksize(1)`` so that images are taken dynamically).
    Per image the second pass finds the first pass's output in cache, which
    whole-batch passes (``sweep_first_axis`` / ``envelope_axis``) do not.
    """
    n_b = masks.shape[0]
    if n_threads < 2:
        for b in range(n_b):
            _image_passes(masks[b], f[b], idx[b] if with_idx else idx[0], dims, spacing, with_idx)
        return
    for b in prange(n_b):
        _image_passes(masks[b], f[b], idx[b] if with_idx else idx[0], dims, spacing, with_idx)
