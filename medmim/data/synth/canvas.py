"""A voxel canvas that paints analytic shapes into a CT volume (HU) and a label map.

Painting is alpha compositing with the shape's partial-volume occupancy f in [0, 1]:
hu <- hu + f (value - hu); voxels with f >= 0.5 take the shape's label. Each shape is evaluated
only inside its bounding box. Thick slices are supersampled along the slice axis (`nsub`
sub-slices averaged), which is what a CT slice profile does to an oblique edge: the partial
volume effect that blurs the lung bases and nodule poles on 5 mm slices.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
from scipy import ndimage

from medmim.data.synth.shapes import Array, Shape

Value = float | Callable[[Array, Array, Array], Array]


class Canvas:
    """HU volume, organ labels and extra masks on one voxel grid.

    Args:
        shape: (I, J, K) voxels; K is the slice axis.
        vox_to_anat: (4, 4) voxel index -> anatomy mm.
        edge: width (mm) of the partial-volume ramp at every surface (in-plane resolution).
        nsub: sub-slices per slice (odd) for slice-profile supersampling.
        background: HU outside every shape (air).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        vox_to_anat: Array,
        edge: float,
        nsub: int = 1,
        background: float = -1000.0,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.m = np.asarray(vox_to_anat, dtype=np.float64)
        self.inv = np.linalg.inv(self.m)
        self.edge = float(edge)
        self.offsets = [float(o) for o in (np.arange(nsub) - (nsub - 1) / 2) / nsub]
        self.hu = np.full(self.shape, background, dtype=np.float32)
        self.label = np.zeros(self.shape, dtype=np.uint8)
        self.masks: dict[str, Array] = {}
        corners = np.array(
            [[c[0], c[1], c[2], 1.0] for c in product(*[(-0.5, n - 0.5) for n in self.shape])]
        )
        anat = (self.m @ corners.T)[:3]
        self.lo, self.hi = anat.min(1), anat.max(1)

    def add_mask(self, name: str) -> Array:
        """A zero uint8 volume painted by `paint(..., mask=name)`."""
        return self.masks.setdefault(name, np.zeros(self.shape, dtype=np.uint8))

    def region(self, lo: Array, hi: Array) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the anatomy-mm box [lo, hi], or None when it misses the grid."""
        lo, hi = np.maximum(lo, self.lo), np.minimum(hi, self.hi)
        if np.any(hi < lo):
            return None
        corners = np.array([[c[0], c[1], c[2], 1.0] for c in product(*zip(lo, hi))])
        vox = (self.inv @ corners.T)[:3]
        start = np.maximum(np.floor(vox.min(1)).astype(np.int64), 0)
        stop = np.minimum(np.ceil(vox.max(1)).astype(np.int64) + 1, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]

    def coords(
        self, sl: tuple[slice, slice, slice], shift: float = 0.0
    ) -> tuple[Array, Array, Array]:
        """Anatomy mm (x, y, z) of the voxels in `sl`, each (i, j, k)-shaped float32."""
        i, j, k = (np.arange(s.start, s.stop, dtype=np.float64) for s in sl)
        k = k + shift
        out = []
        for r in self.m[:3]:
            ij = (r[0] * i[:, None] + r[1] * j[None, :]).astype(np.float32)
            kk = (r[2] * k + r[3]).astype(np.float32)
            out.append(ij[:, :, None] + kk[None, None, :])
        return out[0], out[1], out[2]

    def paint(
        self,
        shape: Shape,
        value: Value,
        label: int | None = None,
        *,
        mask: str | None = None,
        mask_id: int = 1,
        supersample: bool = True,
    ) -> tuple[tuple[slice, ...], Array] | None:
        """Composite `shape` filled with `value` (HU, or a function of x, y, z) onto the canvas.

        Returns:
            (slices, fraction) of the painted box, or None when the shape misses the grid.
        """
        pad = self.edge
        sl = self.region(np.asarray(shape.lo) - pad, np.asarray(shape.hi) + pad)
        if sl is None:
            return None
        offsets = self.offsets if supersample else [0.0]
        frac = None
        centre = None
        for off in offsets:
            xyz = self.coords(sl, off)
            if off == 0.0:
                centre = xyz
            f = shape.fraction(*xyz, self.edge)
            frac = f if frac is None else frac + f
        frac = frac * (1.0 / len(offsets)) if len(offsets) > 1 else frac
        if not frac.any():
            return None
        self._composite(
            sl, frac, value(*centre) if callable(value) else float(value), label, mask, mask_id
        )
        return sl, frac

    def paint_layers(self, shape: Shape, layers: list[tuple[float, Value, int | None]]) -> None:
        """Paint nested shells of one shape, outermost first, from a single distance evaluation.

        Args:
            shape: the outer surface (its distance is evaluated once, at slice centres).
            layers: (depth mm, value, label): the shape shrunk by `depth`, painted in order.
        """
        sl = self.region(np.asarray(shape.lo) - self.edge, np.asarray(shape.hi) + self.edge)
        if sl is None:
            return
        xyz = self.coords(sl)
        d = shape.sdf(*xyz)
        for depth, value, label in layers:
            frac = np.clip(0.5 - (d + np.float32(depth)) * np.float32(1.0 / self.edge), 0.0, 1.0)
            self._composite(sl, frac, value(*xyz) if callable(value) else float(value), label)

    def _composite(
        self,
        sl: tuple[slice, ...],
        frac: Array,
        value: float | Array,
        label: int | None,
        mask: str | None = None,
        mask_id: int = 1,
    ) -> None:
        hu = self.hu[sl]
        hu += frac * (value - hu)
        inside = frac >= 0.5
        if label is not None:
            self.label[sl][inside] = label
        if mask is not None:
            self.masks[mask][sl][inside] = mask_id

    def add_noise(self, rng: np.random.Generator, sigma: float, corr: float) -> None:
        """Add CT noise: white Gaussian noise smoothed in-plane (`corr` voxels), std `sigma` HU."""
        noise = rng.standard_normal(self.shape, dtype=np.float32)
        if corr > 0:
            noise = ndimage.gaussian_filter(noise, sigma=(corr, corr, 0.0), truncate=3.0)
            noise *= np.float32(1.0 / max(float(noise.std()), 1e-6))
        self.hu += noise * np.float32(sigma)

    def to_int16(self) -> Array:
        """The HU volume rounded and clipped to the CT range [-1024, 3071] as int16."""
        return np.clip(np.rint(self.hu), -1024, 3071).astype(np.int16)


def _upsampler(n: int, cells: int) -> Array:
    """(n, cells) Gaussian interpolation weights from a coarse lattice spanning the axis."""
    pos = np.linspace(0, cells - 1, n)[:, None] - np.arange(cells)[None, :]
    w = np.exp(-0.5 * (pos / 0.6) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 6) -> Array:
    """A low-frequency random field of unit standard deviation on a grid of `shape` (texture).

    A `cells`^3 lattice of Gaussian values, interpolated separably by three matrix products.
    """
    coarse = rng.standard_normal((cells, cells, cells)).astype(np.float32)
    wi, wj, wk = (_upsampler(n, cells) for n in shape)
    out = (wi @ coarse.reshape(cells, -1)).reshape(shape[0], cells, cells)
    out = np.einsum("jb,ibc->ijc", wj, out)
    out = out @ wk.T
    return (out - out.mean()) * np.float32(1.0 / max(float(out.std()), 1e-6))


def texture(
    rng: np.random.Generator,
    base: float,
    amplitude: float,
    cells: int = 6,
    extra: Callable[[Array, Array, Array], Array] | None = None,
) -> Callable[[Array, Array, Array], Array]:
    """A value function for `Canvas.paint`: base HU + amplitude x a smooth random
    field (+ extra).
    """
    seed = int(rng.integers(2**31))

    def value(x: Array, y: Array, z: Array) -> Array:
        field = smooth_field(np.random.default_rng(seed), x.shape, cells)
        out = np.float32(base) + np.float32(amplitude) * field
        return out + extra(x, y, z) if extra is not None else out

    return value
