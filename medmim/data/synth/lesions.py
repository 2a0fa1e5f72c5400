"""Lesions of the phantoms: lung nodules (benign / malignant) and one abdominal tumor.

The nodule classes overlap on purpose, so malignancy is learnable but not solved by one cue:

| cue | benign | malignant |
|---|---|---|
| diameter (mm) | log-normal, median 8, clipped 4-20 | log-normal, median 12, clipped 5-30 |
| margin | smooth; 15 % lobulated (amplitude 0.12-0.25) | 80 % lobulated (amplitude 0.20-0.45) |
| spicules | 5 % (few, short) | 55 % (6-16) |
| calcification | 35 % (central, diffuse, popcorn, laminated) | 3 % (small, eccentric) |
| ground-glass halo | none | 25 % (part-solid) |
| texture | homogeneous | heterogeneous; 7 % cavitated |

Size alone separates the classes with an AUC of about 0.77 (log-normal medians 8 vs 12 mm, sd 0.4
of the log; the 5-95 % ranges, 4-15 mm and 6-23 mm, overlap); margin, spicules, calcification and
density add the rest, so a model that reads shape beats one that only measures size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medmim.data.synth.anatomy import Torso
from medmim.data.synth.canvas import Canvas, texture
from medmim.data.synth.shapes import (
    Capsule,
    Ellipsoid,
    Intersect,
    Offset,
    Shape,
    Union,
    rotation,
    sdf_at,
)

CALCIFICATIONS = ("central", "diffuse", "popcorn", "laminated")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _blob(
    rng: np.random.Generator,
    center: np.ndarray,
    radius: float,
    flat: float,
    lobulation: float,
    kappa: float = 6.0,
    grow: float = 0.0,
) -> Ellipsoid:
    """A randomly rotated ellipsoid of mean radius `radius` with lobules of relative size
    `lobulation`.
    """
    semi = radius * np.array([1.0, rng.uniform(flat, 1.0), rng.uniform(flat, 1.0)])
    m = int(rng.integers(4, 9))
    amps = lobulation * rng.uniform(0.3, 1.0, m) * np.where(rng.random(m) < 0.3, -0.6, 1.0)
    lobes = (amps, _unit(rng, m), kappa) if lobulation > 0 else None
    return Ellipsoid(center, semi, rotation(*rng.uniform(-180, 180, 3)), lobes, grow=grow)


def _place(
    rng: np.random.Generator,
    organ: Shape,
    inside: tuple[float, float],
    avoid: list[Shape],
    clearance: float,
    taken: list[tuple[np.ndarray, float]],
    radius: float,
) -> np.ndarray | None:
    """A centre in `organ` whose organ distance lies in `inside` (mm), at least `clearance` mm
    from every `avoid` shape and clear of already placed lesions; None when none is found.
    """
    lo, hi = organ.lo, organ.hi
    for _ in range(4):
        cand = lo + (hi - lo) * rng.random((600, 3))
        d = sdf_at(organ, cand)
        ok = (d > inside[0]) & (d < inside[1])
        for shape in avoid:
            ok &= sdf_at(shape, cand) > clearance
        for c, r in taken:
            ok &= np.linalg.norm(cand - c, axis=1) > r + radius + 5
        if ok.any():
            return cand[int(np.flatnonzero(ok)[0])]
    return None


def sample_nodule(rng: np.random.Generator, malignant: bool) -> dict[str, Any]:
    """Draw the description of one nodule (size, shape and density cues; see the module table)."""
    if malignant:
        diameter = float(np.clip(rng.lognormal(np.log(12.0), 0.4), 5, 30))
        lob = rng.uniform(0.2, 0.45) if rng.random() < 0.8 else rng.uniform(0.0, 0.1)
        spicules = int(rng.integers(6, 17)) if rng.random() < 0.55 else 0
        calc = "eccentric" if rng.random() < 0.03 else "none"
        halo = float(rng.uniform(2, 6)) if rng.random() < 0.25 else 0.0
        cavity = bool(rng.random() < 0.07)
    else:
        diameter = float(np.clip(rng.lognormal(np.log(8.0), 0.4), 4, 20))
        lob = rng.uniform(0.12, 0.25) if rng.random() < 0.15 else rng.uniform(0.0, 0.06)
        spicules = int(rng.integers(2, 5)) if rng.random() < 0.05 else 0
        calc = str(rng.choice(CALCIFICATIONS)) if rng.random() < 0.35 else "none"
        halo, cavity = 0.0, False
    return {
        "malignant": int(malignant),
        "diameter_mm": round(diameter, 2),
        "lobulation": round(float(lob), 3),
        "spicules": spicules,
        "calcification": calc,
        "halo_mm": round(halo, 2),
        "cavitated": cavity,
    }


def paint_nodules(
    canvas: Canvas, torso: Torso, count: int, p_malignant: float = 0.5
) -> list[dict[str, Any]]:
    """Place and paint `count` nodules in the lungs; mask 'nodules' gets ids 1..count.

    Returns:
        One dict per painted nodule: id, lung, centre (anatomy mm), juxtapleural and the cues.
    """
    rng = torso.rng
    canvas.add_mask("nodules")
    avoid: list[Shape] = [torso.organs["heart"], Union(*torso.aorta)]
    taken: list[tuple[np.ndarray, float]] = []
    nodules = []
    for _ in range(count):
        desc = sample_nodule(rng, rng.random() < p_malignant)
        r = desc["diameter_mm"] / 2
        lung = "lung_right" if rng.random() < 0.55 else "lung_left"
        juxta = bool(rng.random() < 0.2)
        inside = (-0.5 * r, -0.1 * r) if juxta else (-np.inf, -(r + desc["halo_mm"] + 3))
        centre = _place(rng, torso.organs[lung], inside, avoid, r + 4, taken, r)
        if centre is None:
            continue
        taken.append((centre, r))
        desc.update(
            id=len(nodules) + 1, lung=lung.split("_")[1], juxtapleural=juxta, center_anat=centre
        )
        _paint_nodule(canvas, torso, desc)
        nodules.append(desc)
    return nodules


def _paint_nodule(canvas: Canvas, torso: Torso, n: dict[str, Any]) -> None:
    rng, c, r, nid = torso.rng, n["center_anat"], n["diameter_mm"] / 2, n["id"]
    paint = dict(mask="nodules", mask_id=nid)
    core = _blob(rng, c, r, 0.75 if n["malignant"] else 0.85, n["lobulation"], rng.uniform(5, 12))
    solid = float(rng.uniform(15, 50) if n["malignant"] else rng.uniform(20, 60))
    if n["halo_mm"] > 0:
        halo = Ellipsoid(core.c, core.semi, core.rot, core.lobes, grow=n["halo_mm"])
        canvas.paint(halo, texture(rng, rng.uniform(-650, -400), 40, 3), **paint)
    canvas.paint(core, texture(rng, solid, 14 if n["malignant"] else 4, 3), **paint)
    for u in _unit(rng, n["spicules"]):
        length = r * rng.uniform(0.5, 1.3) + rng.uniform(3, 8)
        canvas.paint(
            Capsule(c + u * 0.7 * r, c + u * (r + length), rng.uniform(1.0, 1.6), 0.4),
            solid,
            **paint,
        )
    if n["cavitated"]:
        canvas.paint(_blob(rng, c, 0.45 * r, 0.7, 0.15), torso.hu["air"] + 80, **paint)
    calc, bright = n["calcification"], float(rng.uniform(350, 900))
    if calc == "central":
        canvas.paint(_blob(rng, c, r * rng.uniform(0.3, 0.5), 0.8, 0.05), bright, **paint)
    elif calc == "diffuse":
        canvas.paint(Offset(core, -1.0), rng.uniform(250, 600), **paint)
    elif calc == "laminated":  # a bright shell around a soft centre
        canvas.paint(Offset(core, -0.25 * r), bright, **paint)
        canvas.paint(Offset(core, -0.45 * r), solid, **paint)
    elif calc in ("popcorn", "eccentric"):
        spots = int(rng.integers(3, 6)) if calc == "popcorn" else 1
        for u in _unit(rng, spots):
            spot = c + u * r * rng.uniform(0.2, 0.6)
            canvas.paint(Ellipsoid(spot, [rng.uniform(0.8, 2.2)] * 3), bright, **paint)
    _ensure_centre(canvas, torso, c, nid)


def _ensure_centre(canvas: Canvas, torso: Torso, centre: np.ndarray, nid: int) -> None:
    """A lesion smaller than a voxel still owns the voxel holding its centre."""
    ijk = np.rint(canvas.inv @ np.append(centre, 1.0))[:3].astype(int)
    if np.all(ijk >= 0) and np.all(ijk < canvas.shape):
        mask = canvas.masks["nodules"]
        if not (mask == nid).any():
            mask[tuple(ijk)] = nid


def paint_tumor(canvas: Canvas, torso: Torso) -> dict[str, Any] | None:
    """Paint one liver (65 %) or kidney tumor with its own contrast into mask 'tumor'.

    Three quarters are hypodense (host - 30..65 HU; metastasis, cystic RCC), some of them with
    a darker necrotic core (r >= 10 mm) or a thin enhancing rim (r >= 14 mm, the inside then
    45..70 HU below the host); a quarter are homogeneous and hyperdense (host + 30..55 HU;
    hypervascular). A salient region, yet never the brightest structure (bone and contrast
    vessels are).
    """
    rng, hu = torso.rng, torso.hu
    canvas.add_mask("tumor")
    host = str(rng.choice(["liver", "kidney_right", "kidney_left"], p=[0.65, 0.175, 0.175]))
    organ = torso.organs[host]
    r = float(rng.uniform(8, 22) if host == "liver" else rng.uniform(8, 17))
    inside = (-np.inf, -0.6 * r) if host == "liver" else (-np.inf, -0.2 * r)
    centre = _place(rng, organ, inside, [], 0.0, [], r)
    if centre is None:
        return None
    host_hu = hu["liver"] if host == "liver" else hu["kidney"]
    hyper = bool(rng.random() < 0.25)
    rim = bool(not hyper and r >= 14 and rng.random() < 0.4)
    necrotic = bool(not hyper and r >= 10 and rng.random() < 0.4)
    if hyper:
        value = host_hu + rng.uniform(30, 55)
    else:
        value = host_hu - (rng.uniform(45, 70) if rim else rng.uniform(30, 65))
    shape: Shape = _blob(rng, centre, r, 0.8, rng.uniform(0.05, 0.2))
    if host == "liver":
        shape = Intersect(shape, Offset(organ, 2.0))
    canvas.paint(shape, host_hu + rng.uniform(10, 20) if rim else value, mask="tumor")
    if rim:
        canvas.paint(Offset(shape, -2.0), value)
    if necrotic:
        canvas.paint(_blob(rng, centre, 0.45 * r, 0.7, 0.2), value - rng.uniform(15, 30))
    return {
        "organ": host,
        "diameter_mm": round(2 * r, 2),
        "center_anat": centre,
        "hyperdense": hyper,
        "rim": rim,
        "necrotic": necrotic,
        "hu_contrast": round(value - host_hu, 1),
    }
