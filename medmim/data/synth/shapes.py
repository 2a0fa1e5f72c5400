"""Analytic shapes for the synthetic CT phantoms.

Every shape lives in the phantom's anatomy frame (mm; +x = patient right, +y = anterior,
+z = superior, i.e. RAS) and gives an approximate signed distance `sdf(x, y, z)` (mm, negative
inside) on arrays of any shape, plus an axis-aligned bounding box `lo, hi` so that a canvas
evaluates it only where it can be. Distances are radial (from the shape's centre along the ray
through the point): exact on the surface, a little long elsewhere, which is all the partial
volume edge (`fraction`) needs. Parameters are stored as Python floats so float32 coordinate
arrays stay float32 under NumPy 2 promotion rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

INF = 1e5
Array = np.ndarray


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> Array:
    """Rotation matrix R = Rz @ Ry @ Rx for angles in degrees (local -> anatomy axes)."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def _f(v: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(a) for a in v)


class Shape:
    """Base class: a bounding box (`lo`, `hi`, mm) and a signed distance (mm, < 0 inside)."""

    lo: Array
    hi: Array

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Signed distance (mm, < 0 inside) at the points (x, y, z): arrays of any one shape."""
        raise NotImplementedError

    def fraction(self, x: Array, y: Array, z: Array, edge: float) -> Array:
        """Partial-volume occupancy in [0, 1]: a linear ramp of width `edge` mm at the surface."""
        return np.clip(0.5 - self.sdf(x, y, z) * (1.0 / edge), 0.0, 1.0)


class Ellipsoid(Shape):
    """A rotated ellipsoid, optionally lobulated and grown.

    The surface radius along unit direction u (local frame) is
    r(u) = (1 + sum_j a_j exp(kappa (u . v_j - 1))) / |u / semi| + grow: von Mises-Fisher bumps
    (a_j > 0 lobules, a_j < 0 dimples) on an ellipsoid.

    Args:
        center: (3,) mm. semi: (3,) semi-axes in mm. rot: (3, 3) local -> anatomy rotation.
        lobes: optional (amplitudes (m,), directions (m, 3) unit, kappa).
        grow: mm added to the radius (a shell around the same shape).
    """

    def __init__(
        self,
        center: Sequence[float],
        semi: Sequence[float],
        rot: Array | None = None,
        lobes: tuple[Array, Array, float] | None = None,
        grow: float = 0.0,
    ) -> None:
        self.c = _f(center)
        self.semi = _f(semi)
        self.rot = None if rot is None else np.asarray(rot, dtype=np.float64)
        self.lobes = lobes
        self.grow = float(grow)
        bump = 1.0 + (float(np.clip(lobes[0], 0, None).sum()) if lobes is not None else 0.0)
        r = np.eye(3) if self.rot is None else self.rot
        half = np.sqrt(((r * np.asarray(self.semi)[None, :]) ** 2).sum(1)) * bump + self.grow
        self.lo, self.hi = np.asarray(self.c) - half, np.asarray(self.c) + half

    def local(self, x: Array, y: Array, z: Array) -> tuple[Array, Array, Array]:
        """Offsets from the centre in the ellipsoid's local frame (R^T (p - center))."""
        dx, dy, dz = x - self.c[0], y - self.c[1], z - self.c[2]
        if self.rot is None:
            return dx, dy, dz
        r = self.rot  # q = R^T d
        return (
            float(r[0, 0]) * dx + float(r[1, 0]) * dy + float(r[2, 0]) * dz,
            float(r[0, 1]) * dx + float(r[1, 1]) * dy + float(r[2, 1]) * dz,
            float(r[0, 2]) * dx + float(r[1, 2]) * dy + float(r[2, 2]) * dz,
        )

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Radial distance (mm) to the lobulated ellipsoid surface grown by `grow`."""
        q0, q1, q2 = self.local(x, y, z)
        rho = np.sqrt(q0 * q0 + q1 * q1 + q2 * q2) + 1e-4
        a, b, c = self.semi
        inv = np.sqrt((q0 * (1 / a)) ** 2 + (q1 * (1 / b)) ** 2 + (q2 * (1 / c)) ** 2) / rho
        radius = 1.0 / np.maximum(inv, 1e-6)
        if self.lobes is not None:
            amps, dirs, kappa = self.lobes
            pert = np.zeros_like(rho)
            for amp, v in zip(amps, dirs):
                cos = (q0 * float(v[0]) + q1 * float(v[1]) + q2 * float(v[2])) / rho
                pert += float(amp) * np.exp(float(kappa) * (cos - 1.0))
            radius = radius * (1.0 + pert)
        return rho - radius - self.grow


class Capsule(Shape):
    """A tapered tube from `a` (radius `ra`) to `b` (radius `rb`); vessels, airways, ribs.

    `fraction` keeps tubes thinner than a voxel visible with the right integrated density:
    a tube of radius r < edge / 2 is drawn as one of radius edge / 2 scaled by 2 r / edge.
    """

    def __init__(
        self, a: Sequence[float], b: Sequence[float], ra: float, rb: float | None = None
    ) -> None:
        self.a, self.b = _f(a), _f(b)
        self.ra = float(ra)
        self.rb = float(ra if rb is None else rb)
        ab = np.subtract(self.b, self.a)
        self.ab = _f(ab)
        self.inv_len2 = 1.0 / max(float(ab @ ab), 1e-9)
        r = max(self.ra, self.rb)
        self.lo = np.minimum(self.a, self.b) - r
        self.hi = np.maximum(self.a, self.b) + r

    def _dist(self, x: Array, y: Array, z: Array) -> tuple[Array, Array]:
        px, py, pz = x - self.a[0], y - self.a[1], z - self.a[2]
        t = np.clip((px * self.ab[0] + py * self.ab[1] + pz * self.ab[2]) * self.inv_len2, 0.0, 1.0)
        px, py, pz = px - t * self.ab[0], py - t * self.ab[1], pz - t * self.ab[2]
        return np.sqrt(px * px + py * py + pz * pz), self.ra + t * (self.rb - self.ra)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Distance to the segment `a` -> `b` minus the tapered radius there, in mm."""
        dist, r = self._dist(x, y, z)
        return dist - r

    def fraction(self, x: Array, y: Array, z: Array, edge: float) -> Array:
        """Partial-volume occupancy in [0, 1]; sub-voxel tubes are drawn thicker but fainter."""
        dist, r = self._dist(x, y, z)
        half = 0.5 * edge
        if min(self.ra, self.rb) >= half:
            return np.clip(0.5 - (dist - r) * (1.0 / edge), 0.0, 1.0)
        scale = np.minimum(1.0, r * (1.0 / half))
        return np.clip(0.5 - (dist - np.maximum(r, half)) * (1.0 / edge), 0.0, 1.0) * scale


def tube(points: Sequence[Sequence[float]], radii: Sequence[float]) -> list[Capsule]:
    """A polyline tube: one tapered capsule per segment."""
    return [
        Capsule(points[i], points[i + 1], radii[i], radii[i + 1]) for i in range(len(points) - 1)
    ]


class Prism(Shape):
    """A superelliptic cylinder along z (infinite in z): the body outline and its layers.

    Cross-section |x - cx|^p / a^p + |y - cy|^p / b^p = 1, grown by `grow` mm (negative: shrunk).
    """

    def __init__(
        self, center_xy: Sequence[float], a: float, b: float, power: float, grow: float = 0.0
    ) -> None:
        self.cx, self.cy = _f(center_xy)
        self.a, self.b, self.p, self.grow = float(a), float(b), float(power), float(grow)
        self.lo = np.array([self.cx - a - grow, self.cy - b - grow, -INF])
        self.hi = np.array([self.cx + a + grow, self.cy + b + grow, INF])

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Radial distance (mm) in the xy-plane to the superelliptic outline grown by `grow`."""
        dx, dy = np.abs(x - self.cx), np.abs(y - self.cy)
        rho = np.sqrt(dx * dx + dy * dy) + 1e-4
        k = (dx * (1 / self.a)) ** self.p + (dy * (1 / self.b)) ** self.p
        return rho * (1.0 - k ** (-1.0 / self.p)) - self.grow


class Surface(Shape):
    """The half-space below (`below=True`) or above a height field z = h(x, y), in mm."""

    def __init__(self, height: Callable[[Array, Array], Array], below: bool = True) -> None:
        self.h, self.sign = height, 1.0 if below else -1.0
        self.lo, self.hi = np.full(3, -INF), np.full(3, INF)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Vertical distance z - h(x, y), negated for the half-space above."""
        return (z - self.h(x, y)) * self.sign


class HalfSpace(Shape):
    """Points p with n . p < offset (n need not be unit; it is normalised)."""

    def __init__(self, normal: Sequence[float], offset: float) -> None:
        n = np.asarray(normal, dtype=np.float64)
        norm = float(np.linalg.norm(n))
        self.n, self.off = _f(n / norm), float(offset) / norm
        self.lo, self.hi = np.full(3, -INF), np.full(3, INF)
        axis = int(np.argmax(np.abs(n)))
        if np.count_nonzero(n) == 1:  # axis-aligned: one side of the box is finite
            if n[axis] > 0:
                self.hi[axis] = self.off
            else:
                self.lo[axis] = -self.off

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Signed distance n . p - offset to the plane (n unit)."""
        return x * self.n[0] + y * self.n[1] + z * self.n[2] - self.off


class Intersect(Shape):
    """Points inside every shape (max of distances); the box is the boxes' intersection."""

    def __init__(self, *shapes: Shape) -> None:
        self.shapes = shapes
        self.lo = np.max([s.lo for s in shapes], axis=0)
        self.hi = np.min([s.hi for s in shapes], axis=0)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Maximum of the shapes' distances."""
        d = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            d = np.maximum(d, s.sdf(x, y, z))
        return d


class Union(Shape):
    """Points inside any shape (min of distances)."""

    def __init__(self, *shapes: Shape) -> None:
        self.shapes = shapes
        self.lo = np.min([s.lo for s in shapes], axis=0)
        self.hi = np.max([s.hi for s in shapes], axis=0)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """Minimum of the shapes' distances."""
        d = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            d = np.minimum(d, s.sdf(x, y, z))
        return d


class Subtract(Shape):
    """Points inside `a` and outside `b`."""

    def __init__(self, a: Shape, b: Shape) -> None:
        self.a, self.b, self.lo, self.hi = a, b, a.lo, a.hi

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """max(sdf_a, -sdf_b)."""
        return np.maximum(self.a.sdf(x, y, z), -self.b.sdf(x, y, z))


class Offset(Shape):
    """A shape grown (mm > 0) or shrunk (mm < 0) by a constant distance."""

    def __init__(self, shape: Shape, mm: float) -> None:
        self.shape, self.mm = shape, float(mm)
        self.lo, self.hi = np.asarray(shape.lo) - max(mm, 0), np.asarray(shape.hi) + max(mm, 0)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        """The shape's distance minus `mm`."""
        return self.shape.sdf(x, y, z) - self.mm


def sdf_at(shape: Shape, points: Array) -> Array:
    """Signed distance of a shape at points (n, 3) in mm (float64; for placement checks)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return shape.sdf(p[:, 0], p[:, 1], p[:, 2])
