"""A randomised thorax-abdomen: body wall, lungs with vessels and airways, heart, aorta, liver,
spleen, kidneys and bowel. The skeleton is in `skeleton.py`, lesions in `lesions.py`.

Geometry is a template in mm (anatomy frame, RAS; z = 0 at the top of the right hemidiaphragm)
scaled per phantom by a habitus factor `s` (x, y, z), with per-organ position (sd 4 mm), size
(+-10 %) and rotation jitter. The scan covers from below the kidneys to above the lung apices.
"""

from __future__ import annotations

import numpy as np

from medmim.data.synth.canvas import Canvas, texture
from medmim.data.synth.shapes import (
    Ellipsoid,
    HalfSpace,
    Intersect,
    Prism,
    Shape,
    Subtract,
    Surface,
    Union,
    rotation,
    sdf_at,
    tube,
)
from medmim.data.synth.tissues import LABEL_OF, sample_tissues
from medmim.data.synth.trees import grow_tree


class Torso:
    """The sampled anatomy of one phantom: shapes, tissue HU and extent.

    Attributes:
        s: (3,) habitus scale. phase: 'native' or 'portal'. hu: tissue -> HU.
        organs: organ name -> shape (the ones lesions are placed in, plus `cavity`).
        lo, hi: (3,) anatomy-mm box the scan must cover.
    """

    def __init__(self, rng: np.random.Generator, phase: str) -> None:
        self.rng = rng
        self.phase = phase
        self.hu = sample_tissues(rng, phase)
        sx = rng.uniform(0.88, 1.12)
        self.s = np.array([sx, sx * rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)])
        self.t_fat = rng.uniform(6, 30)
        self.t_mus = rng.uniform(8, 14)
        self.organs: dict[str, Shape] = {}
        self._body()
        self._thorax()
        self._abdomen()
        z_lo = min(self.organs["kidney_right"].lo[2], self.organs["kidney_left"].lo[2]) - 8
        z_hi = max(self.organs["lung_right"].hi[2], self.organs["lung_left"].hi[2]) + 8
        self.lo = np.array([-self.a0 * 1.05, -self.b0 * 1.05, z_lo])
        self.hi = np.array([self.a0 * 1.05, self.b0 * 1.05, z_hi])

    # -- sampling helpers ------------------------------------------------------------------
    def P(self, x: float, y: float, z: float, sd: float = 4.0) -> np.ndarray:
        """A template position scaled by the habitus, jittered."""
        return np.array([x, y, z]) * self.s + self.rng.normal(0, sd, 3)

    def S(self, a: float, b: float, c: float) -> np.ndarray:
        """Template semi-axes scaled by the habitus and an organ size factor."""
        return np.array([a, b, c]) * self.s * self.rng.uniform(0.9, 1.1)

    def R(self, rx: float = 0, ry: float = 0, rz: float = 0, sd: float = 6.0) -> np.ndarray:
        """A template rotation (degrees about x, y, z), each angle jittered by N(0, sd)."""
        return rotation(*(np.array([rx, ry, rz]) + self.rng.normal(0, sd, 3)))

    def diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm: right dome higher than left, recesses deeper behind."""
        sx, sy, sz = (float(v) for v in self.s)
        off = (-6.0 + 6.0 * np.tanh(x / 30.0)) * sz + self.dome_shift
        bowl = ((np.abs(x) - 65 * sx) / (95 * sx)) ** 2 + ((y - 10 * sy) / (100 * sy)) ** 2
        return off - self.dome_depth * bowl

    # -- geometry --------------------------------------------------------------------------
    def _body(self) -> None:
        rng, (sx, sy, sz) = self.rng, (float(v) for v in self.s)
        self.a0, self.b0 = 150.0 * sx, 105.0 * sy
        self.power = float(rng.uniform(2.2, 2.8))
        body = dict(center_xy=(0, 0), a=self.a0, b=self.b0, power=self.power)
        self.organs["body"] = Prism(**body)
        self.organs["muscle"] = Prism(**body, grow=-self.t_fat)
        self.organs["cavity"] = Prism(**body, grow=-(self.t_fat + self.t_mus))
        self.inner = Prism(**body, grow=-(self.t_fat + self.t_mus + 3))
        self.y_spine = -self.b0 + 0.5 * self.t_fat + 55 * sy  # vertebral body centre
        self.dome_depth = 40 * sz * rng.uniform(0.8, 1.2)
        self.dome_shift = rng.normal(0, 5)

    def _thorax(self) -> None:
        above = Surface(lambda x, y: self.diaphragm(x, y) + 2, below=False)
        for side, name in ((1, "lung_right"), (-1, "lung_left")):
            apex = Ellipsoid(self.P(65 * side, -5, 0), self.S(85, 115, 140), self.R(sd=3))
            medial = HalfSpace((-side, 0, 0), -14 * float(self.s[0]) + self.rng.normal(0, 2))
            self.organs[name] = Intersect(apex, above, medial, self.inner)
        c = self.P(-22, 38, 28)
        r = self.R(12, 10, -40)
        self.heart_rot = r
        self.organs["heart"] = Intersect(
            Ellipsoid(c, self.S(58, 46, 50), r),
            Surface(lambda x, y: self.diaphragm(x, y) - 4, below=False),
        )
        self.chambers = [
            Ellipsoid(c + r @ (np.array(o) * self.s), self.S(*sm), r)
            for o, sm in (((-5, 13, 3), (38, 16, 30)), ((8, -12, -3), (38, 18, 30)))
        ]
        yb = self.y_spine  # the descending aorta runs left-anterior of the vertebral bodies
        sx, sy, sz = (float(v) for v in self.s)
        pts = [
            (8 * sx, 30 * sy, 45 * sz),
            (10 * sx, 32 * sy, 92 * sz),
            (-4 * sx, 30 * sy, 118 * sz),
            (-26 * sx, 14 * sy, 122 * sz),
            (-28 * sx, yb + 40, 110 * sz),
            (-22 * sx, yb + 30, 85 * sz),
            (-20 * sx, yb + 28, 30 * sz),
            (-15 * sx, yb + 30, -40 * sz),
            (-10 * sx, yb + 33, -120 * sz),
            (-8 * sx, yb + 34, -260 * sz),
        ]
        pts = [np.array(p) + self.rng.normal(0, 2.5, 3) for p in pts]
        radii = np.array([14, 15, 14, 13, 12, 12, 11, 11, 10, 10]) * self.rng.uniform(0.85, 1.15)
        self.aorta = tube(pts, radii)
        carina = self.P(0, 12, 60, sd=2)
        top = np.array([0, 18 * sy, 400.0])
        rb, lb = carina + self.P(38, -6, -18, 2), carina + self.P(-42, -6, -22, 2)
        rt = self.rng.uniform(8, 10)
        self.airway = [
            (top, carina, rt, rt),
            (carina, rb, 6.5, 5.5),
            (carina, lb, 6.0, 5.0),
            (rb, rb + self.P(24, -4, 14, 2), 4.5, 3.5),
            (rb, rb + self.P(22, -8, -28, 2), 5.0, 4.0),
            (lb, lb + self.P(-20, -2, 16, 2), 4.5, 3.5),
            (lb, lb + self.P(-18, -10, -26, 2), 5.0, 4.0),
        ]

    def _abdomen(self) -> None:
        below = Surface(lambda x, y: self.diaphragm(x, y) - 3, below=True)
        inner = Prism((0, 0), self.a0, self.b0, self.power, grow=-(self.t_fat + self.t_mus + 1))
        right = Ellipsoid(self.P(60, 2, -48), self.S(72, 82, 62), self.R(0, 0, 0))
        left = Ellipsoid(self.P(-8, 38, -28), self.S(55, 38, 30), self.R(0, 10, -15))
        self.organs["liver"] = Intersect(Union(right, left), below, inner)
        spleen = Ellipsoid(self.P(-82, -38, -42), self.S(24, 52, 48), self.R(0, 0, 35))
        notch = Ellipsoid(
            spleen.c + self.s * np.array([22, 12, 0]), self.S(20, 40, 40), self.R(0, 0, 35)
        )
        self.organs["spleen"] = Intersect(Subtract(spleen, notch), below, inner)
        yb = self.y_spine
        for side, name, z in ((1, "kidney_right", -102), (-1, "kidney_left", -90)):
            c = self.P(62 * side, 0, z)
            c[1] = yb + 8 + self.rng.normal(0, 3)
            self.organs[name] = Ellipsoid(c, self.S(25, 22, 50), self.R(0, -12 * side, 25 * side))

    # -- painting --------------------------------------------------------------------------
    def paint(self, canvas: Canvas) -> None:
        """Paint the soft-tissue anatomy (everything but the skeleton and lesions)."""
        hu, rng, body = self.hu, self.rng, LABEL_OF["body"]
        step = hu["mediastinum"] - hu["cavity"]
        thorax = lambda x, y, z: step / (1 + np.exp(-(z - self.diaphragm(x, y)) / 5.0))  # noqa: E731
        cavity = texture(rng, hu["cavity"], 18, 8, thorax)
        canvas.paint_layers(
            self.organs["body"],
            [
                (0.0, hu["fat"], body),
                (self.t_fat, hu["muscle"], body),
                (self.t_fat + self.t_mus, cavity, body),
            ],
        )
        self._paint_bowel(canvas)
        self._paint_lungs(canvas)
        y_c = self.y_spine - 30 * float(self.s[1])
        for side in (1, -1):
            para = Ellipsoid(
                (side * 30 * self.s[0], y_c - 8, (self.lo[2] + self.hi[2]) / 2),
                (22 * self.s[0], 18 * self.s[1], (self.hi[2] - self.lo[2]) / 2 + 60),
            )
            canvas.paint(
                Intersect(para, self.organs["muscle"]), hu["muscle"], body, supersample=False
            )
        canvas.paint(
            Ellipsoid(
                self.organs["heart"].shapes[0].c,
                self.organs["heart"].shapes[0].semi,
                self.heart_rot,
                grow=4.0,
            ),
            hu["mediastinum"],
            body,
        )
        canvas.paint(self.organs["heart"], hu["myocardium"], LABEL_OF["heart"])
        for chamber in self.chambers:
            canvas.paint(Intersect(chamber, self.organs["heart"]), hu["blood"], LABEL_OF["heart"])
        for seg in self.aorta:
            canvas.paint(seg, hu["blood"], LABEL_OF["aorta"])
        self._paint_airway(canvas)
        self._paint_organs(canvas)

    def _paint_lungs(self, canvas: Canvas) -> None:
        hu, rng = self.hu, self.rng
        grad = float(rng.uniform(15, 40))
        dependent = lambda x, y, z: grad * np.clip(-y / (90 * float(self.s[1])), -1, 1)  # noqa: E731
        for side, name in ((1, "lung_right"), (-1, "lung_left")):
            lung = self.organs[name]
            canvas.paint(lung, texture(rng, hu["lung"], 10, 6, dependent), LABEL_OF[name])
            hilum = self.P(40 * side, 0, 45, sd=2)
            trunks = [
                (0.2 * side, 0.1, 1),
                (side, 0.1, -0.1),
                (0.3 * side, -0.5, -1),
                (0.3 * side, 0.9, -0.3),
            ]
            # coarse grids get fewer, thicker vessels: finer ones would vanish in the voxel noise
            thinnest, detail = max(0.6, 0.25 * canvas.edge), min(1.0, 2.0 / canvas.edge)
            segments = grow_tree(
                rng,
                lung,
                hilum,
                trunks,
                rng.uniform(4.5, 6),
                min_radius=thinnest,
                max_segments=int(250 * detail),
            )
            # peripheral subtrees (their feeding branches are left out) fill what the main tree
            # missed
            points = lung.lo + (lung.hi - lung.lo) * rng.random((400, 3))
            points = points[sdf_at(lung, points) < -12][: int(14 * detail)]
            for p in points:
                segments += grow_tree(
                    rng,
                    lung,
                    p,
                    [p - hilum],
                    rng.uniform(1.8, 2.8),
                    min_radius=thinnest,
                    max_segments=25,
                )
            for seg in segments:
                canvas.paint(seg, hu["blood"])

    def _paint_airway(self, canvas: Canvas) -> None:
        for a, b, ra, rb in self.airway:
            canvas.paint(tube([a, b], [ra + 1.8, rb + 1.5])[0], self.hu["airway_wall"])
        for a, b, ra, rb in self.airway:
            canvas.paint(tube([a, b], [ra, rb])[0], self.hu["air"], LABEL_OF["airway"])

    def _paint_bowel(self, canvas: Canvas) -> None:
        rng, s, hu = self.rng, self.s, self.hu
        for _ in range(int(rng.integers(3, 8))):
            p = np.array([rng.uniform(-70, 70), rng.uniform(-10, 60), rng.uniform(-150, -60)]) * s
            pts = [p]
            for _ in range(int(rng.integers(1, 4))):
                d = rng.standard_normal(3)
                pts.append(pts[-1] + d / np.linalg.norm(d) * rng.uniform(20, 40))
            r = rng.uniform(8, 14)
            gas = rng.random() < 0.45
            content = hu["air"] + 40 if gas else rng.uniform(0, 25)
            for seg in tube(pts, [r + 2.5] * len(pts)):
                canvas.paint(Intersect(seg, self.organs["cavity"]), hu["bowel_wall"])
            for seg in tube(pts, [r] * len(pts)):
                canvas.paint(Intersect(seg, self.organs["cavity"]), content)

    def _paint_organs(self, canvas: Canvas) -> None:
        hu, rng = self.hu, self.rng
        liver = self.organs["liver"]
        canvas.paint(liver, texture(rng, hu["liver"], 4, 6), LABEL_OF["liver"])
        vessel = hu["liver"] + (35 if self.phase == "portal" else -12)
        root = self.P(35, 0, -55, sd=3)
        trunks = [(1, 0.2, 0.3), (0.5, 0.6, -0.5), (-0.6, 0.7, 0.4)]
        for seg in grow_tree(
            rng, liver, root, trunks, rng.uniform(4, 5.5), min_radius=0.9, max_segments=70
        ):
            canvas.paint(seg, vessel)
        canvas.paint(self.organs["spleen"], texture(rng, hu["spleen"], 4, 5), LABEL_OF["spleen"])
        for name in ("kidney_right", "kidney_left"):
            kid = self.organs[name]
            canvas.paint(kid, hu["kidney"], LABEL_OF[name])
            medial = -np.sign(kid.c[0])
            sinus = Ellipsoid(
                np.asarray(kid.c) + kid.rot @ np.array([10 * medial, 6, 0]), (9, 9, 28), kid.rot
            )
            canvas.paint(sinus, hu["sinus_fat"])
