"""The skeleton of a phantom: vertebrae (cortical shell, cancellous body, posterior arch,
spinal canal), intervertebral discs and ribs.
"""

from __future__ import annotations

import numpy as np

from medmim.data.synth.anatomy import Torso
from medmim.data.synth.canvas import Canvas
from medmim.data.synth.shapes import Capsule, Ellipsoid, HalfSpace, Intersect, tube
from medmim.data.synth.tissues import LABEL_OF


def _slab(z0: float, z1: float) -> Intersect:
    return Intersect(HalfSpace((0, 0, 1), z1), HalfSpace((0, 0, -1), -z0))


def paint_skeleton(canvas: Canvas, torso: Torso) -> None:
    """Paint vertebrae and discs over the whole scan length, and ribs on the thoracic levels.

    Vertebral bodies are barrels (ellipsoid cut by two planes) 22-28 mm high, larger in the
    lumbar spine, with a 2.5 mm cortical shell; discs are 6-8 mm.
    """
    rng, hu, s = torso.rng, torso.hu, torso.s
    sx, sy, sz = (float(v) for v in s)
    spine, body = LABEL_OF["spine"], LABEL_OF["body"]
    yb = torso.y_spine
    canal_y = yb - 26 * sy
    canal = Capsule((0, canal_y, torso.lo[2] - 50), (0, canal_y, torso.hi[2] + 50), 8 * sx)
    canvas.paint(canal, hu["csf"], body)
    z = float(torso.hi[2]) + 20
    while z > torso.lo[2] - 40:
        lumbar = float(np.clip(-z / (150 * sz), 0, 1))
        h = (22 + 6 * lumbar) * sz * rng.uniform(0.95, 1.05)
        disc = rng.uniform(6, 8) * sz
        zc = z - h / 2
        rx, ry = (17 + 6 * lumbar) * sx, (15 + 4 * lumbar) * sy
        barrel = Ellipsoid((0, yb, zc), (rx, ry, h / 2 + 5))
        canvas.paint(Intersect(barrel, _slab(zc - h / 2, zc + h / 2)), hu["cortical_bone"], spine)
        core = Ellipsoid((0, yb, zc), (rx, ry, h / 2 + 5), grow=-2.5)
        canvas.paint(
            Intersect(core, _slab(zc - h / 2 + 2.5, zc + h / 2 - 2.5)), hu["cancellous_bone"], spine
        )
        disc_shape = Intersect(
            Ellipsoid((0, yb, zc), (rx - 1, ry - 1, 1e4)), _slab(zc - h / 2 - disc, zc - h / 2)
        )
        canvas.paint(disc_shape, hu["disc"], body)
        _paint_arch(canvas, torso, zc, yb - ry, canal_y)
        if -75 * sz < zc < torso.hi[2] - 25:
            _paint_ribs(canvas, torso, zc, canal_y)
        z -= h + disc


def _paint_arch(canvas: Canvas, torso: Torso, zc: float, y_front: float, canal_y: float) -> None:
    """Pedicles, laminae, spinous and transverse processes around the canal."""
    sx, sy, sz = (float(v) for v in torso.s)
    value = 0.75 * torso.hu["cortical_bone"] + 0.25 * torso.hu["cancellous_bone"]
    parts = []
    for side in (1, -1):
        foot = (side * 10 * sx, y_front + 3, zc)
        joint = (side * 11 * sx, canal_y - 3 * sy, zc)
        parts += [
            Capsule(foot, joint, 4.0),
            Capsule(joint, (0, canal_y - 12 * sy, zc), 3.5),
            Capsule(joint, (side * 32 * sx, canal_y - 6 * sy, zc + 2), 3.5),
        ]
    parts.append(
        Capsule((0, canal_y - 12 * sy, zc), (0, canal_y - 26 * sy, zc - 12 * sz), 3.5, 3.0)
    )
    for part in parts:
        canvas.paint(part, value, LABEL_OF["spine"])


def _paint_ribs(canvas: Canvas, torso: Torso, zc: float, canal_y: float) -> None:
    """Two ribs leaving the transverse processes, following the chest wall and dropping
    30-50 mm towards the front; lower ribs end further back (floating ribs).
    """
    rng = torso.rng
    sx, sy, sz = (float(v) for v in torso.s)
    depth = torso.t_fat + 0.6 * torso.t_mus + 4
    a = torso.a0 - depth
    b = torso.b0 - depth
    end = np.deg2rad(55 + min(zc, 0.0) / (75 * sz) * 50)
    theta = np.linspace(np.deg2rad(-68), end, 7)
    drop = rng.uniform(30, 50) * sz
    r = 3.8 * rng.uniform(0.9, 1.1)
    for side in (1, -1):
        pts = [(side * 32 * sx, canal_y - 6 * sy, zc + 2)]
        for i, t in enumerate(theta):
            pts.append((side * a * np.cos(t), b * np.sin(t), zc - drop * i / (len(theta) - 1)))
        for seg in tube(pts, [r] * len(pts)):
            canvas.paint(seg, torso.hu["rib"], LABEL_OF["ribs"])
