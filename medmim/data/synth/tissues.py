"""Tissue attenuation (HU) and the organ label table of the synthetic CT phantoms."""

from __future__ import annotations

import numpy as np

#: Organ label map values (uint8). Tumors and nodules keep their host's label; they have their
#: own masks.
ORGAN_LABELS: dict[int, str] = {
    0: "background",
    1: "body",
    2: "lung_left",
    3: "lung_right",
    4: "heart",
    5: "aorta",
    6: "spine",
    7: "liver",
    8: "spleen",
    9: "kidney_left",
    10: "kidney_right",
    11: "airway",
    12: "ribs",
}
LABEL_OF: dict[str, int] = {name: k for k, name in ORGAN_LABELS.items()}

#: Mean HU per tissue: (non-contrast, portal-venous phase). Each phantom draws one phase and
#: jitters every tissue by `JITTER` HU (uniform), so intensity alone does not name an organ.
TISSUE_HU: dict[str, tuple[float, float]] = {
    "fat": (-100.0, -100.0),
    "muscle": (45.0, 55.0),
    "cavity": (15.0, 30.0),
    "mediastinum": (-75.0, -70.0),
    "lung": (-860.0, -860.0),
    "blood": (40.0, 160.0),
    "myocardium": (45.0, 100.0),
    "liver": (58.0, 108.0),
    "spleen": (48.0, 115.0),
    "kidney": (32.0, 155.0),
    "sinus_fat": (-70.0, -60.0),
    "cortical_bone": (800.0, 800.0),
    "cancellous_bone": (300.0, 300.0),
    "rib": (650.0, 650.0),
    "disc": (75.0, 80.0),
    "csf": (8.0, 10.0),
    "airway_wall": (40.0, 60.0),
    "air": (-995.0, -995.0),
    "bowel_wall": (35.0, 85.0),
}
JITTER: dict[str, float] = {
    "cortical_bone": 120.0,
    "cancellous_bone": 60.0,
    "rib": 100.0,
    "lung": 25.0,
}
PHASES: tuple[str, ...] = ("native", "portal")


def sample_tissues(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """Per-phantom tissue HU for `phase` ('native' or 'portal'), each jittered."""
    col = PHASES.index(phase)
    return {
        name: float(values[col] + rng.uniform(-1, 1) * JITTER.get(name, 8.0))
        for name, values in TISSUE_HU.items()
    }
