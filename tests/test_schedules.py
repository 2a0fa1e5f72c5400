import math

from medmim.schedules import cosine, linear, warmup_constant, warmup_cosine


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
    assert warmup_constant(5, 10, 0.04, 0.07, delay=10) == 0.04
    assert math.isclose(warmup_constant(15, 10, 0.04, 0.07, delay=10), 0.055)
    assert warmup_constant(30, 10, 0.04, 0.07, delay=10) == 0.07
