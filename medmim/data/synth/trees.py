"""Branching tubes: pulmonary and hepatic vessel trees grown inside an organ."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from medmim.data.synth.shapes import Capsule, Shape, sdf_at


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


def _turn(rng: np.random.Generator, d: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate unit vector `d` by `angle_deg` about a random axis perpendicular to it."""
    axis = _cross(d, rng.standard_normal(3))
    axis /= np.sqrt(axis @ axis) + 1e-9
    a = np.deg2rad(angle_deg)
    return d * np.cos(a) + _cross(axis, d) * np.sin(a)


def grow_tree(
    rng: np.random.Generator,
    organ: Shape,
    root: Sequence[float],
    directions: Sequence[Sequence[float]],
    radius: float,
    *,
    min_radius: float = 0.7,
    max_segments: int = 200,
    margin: float = 1.0,
) -> list[Capsule]:
    """Grow a bifurcating vessel tree breadth-first from `root` inside `organ`.

    Each branch runs `radius x U(5, 9) + 3` mm, then splits into two children turned 20-45 deg
    to either side with radii `x U(0.72, 0.85)` (Murray's law r^3 = r1^3 + r2^3 gives 0.79).
    A branch whose end would leave the organ (signed distance > -margin) is halved, then turned
    35 deg (three tries), then dropped, so trees fill the organ and end at its surface.

    Returns:
        The tree's segments as tapered capsules.
    """
    segments: list[Capsule] = []
    queue = deque(
        (np.asarray(root, float), np.asarray(d, float) / np.linalg.norm(d), radius)
        for d in directions
    )
    while queue and len(segments) < max_segments:
        start, d, r = queue.popleft()
        length = r * rng.uniform(5, 9) + 3
        end = None
        for tries in ([d, d * 0.5], [_turn(rng, d, 35.0) * 0.7 for _ in range(3)]):
            cands = start + np.array(tries) * length
            inside = np.flatnonzero(sdf_at(organ, cands) < -margin)
            if inside.size:
                end = cands[inside[0]]
                break
        if end is None:
            continue
        d = (end - start) / np.linalg.norm(end - start)
        r_end = r * 0.95
        segments.append(Capsule(start, end, r, r_end))
        child = r_end * rng.uniform(0.72, 0.85)
        if child < min_radius:
            continue
        angle = rng.uniform(20, 45)
        first = _turn(rng, d, angle)
        second = 2 * d * float(d @ first) - first  # mirror of `first` about d: the other side
        for nd in (first, second):
            queue.append((end, nd / np.linalg.norm(nd), child * rng.uniform(0.9, 1.1)))
    return segments
