import math

import numpy as np
import pytest

from medmim.schedules import cosine, ema_momentum, epoch_warmup, linear, warmup_cosine


def test_cosine_endpoints_and_monotone() -> None:
    values = [cosine(s, 100, 0.996, 1.0) for s in range(0, 121)]
    assert values[0] == 0.996 and values[100] == 1.0 and values[120] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert math.isclose(cosine(50, 100, 0.0, 1.0), 0.5)


def test_warmup_cosine_and_constant() -> None:
    assert warmup_cosine(0, 100, 1.0, 0.0, 10) == 0.0
    assert math.isclose(warmup_cosine(5, 100, 1.0, 0.0, 10), 0.5)
    assert warmup_cosine(10, 100, 1.0, 0.0, 10) == 1.0
    assert warmup_cosine(100, 100, 1.0, 0.1, 10) == 0.1
    assert linear(3, 0, 1.0, 2.0) == 2.0
    assert epoch_warmup(5, 11, 1, 0.04, 0.07, delay=10) == 0.04
    assert math.isclose(epoch_warmup(15, 11, 1, 0.04, 0.07, delay=10), 0.055)
    assert epoch_warmup(30, 11, 1, 0.04, 0.07, delay=10) == 0.07


@pytest.mark.parametrize("steps_per_epoch", [1, 7])
def test_epoch_warmup_is_the_official_linspace_per_epoch(steps_per_epoch: int) -> None:
    """DINO/iBOT/SMIT: np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(epochs - 30) * 0.07))
    indexed by the epoch; 0.07 is reached in epoch 29, not 30."""
    official = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07))
    ours = [
        epoch_warmup(s, 30 * steps_per_epoch, steps_per_epoch, 0.04, 0.07)
        for s in range(100 * steps_per_epoch)
    ]
    assert ours == pytest.approx(np.repeat(official, steps_per_epoch).tolist(), abs=1e-12)
    assert ours[29 * steps_per_epoch] == 0.07 and ours[29 * steps_per_epoch - 1] < 0.07


def test_epoch_warmup_short_and_empty() -> None:
    assert epoch_warmup(0, 0, 10, 0.04, 0.07) == 0.07  # no warm-up: the final value at once
    assert [epoch_warmup(s, 10, 10, 0.04, 0.07) for s in (0, 9, 10)] == [
        0.04,
        0.04,
        0.07,
    ]  # linspace(., ., 1)
    assert [epoch_warmup(s, 5, 10, 0.04, 0.07) for s in (4, 5)] == [0.04, 0.07]  # half an epoch


def test_ema_momentum_is_monotone_to_exactly_one_at_the_last_step() -> None:
    values = [ema_momentum(s, 50) for s in range(60)]
    assert values[0] == 0.996 and values[49] == 1.0 and values[59] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert 0.996 < values[25] < 1.0
    assert ema_momentum(0, 1) == 1.0
