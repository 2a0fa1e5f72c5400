import pytest

from medmim.errors import ConfigError
from medmim.registry import Registry


def make() -> Registry:
    reg: Registry = Registry("thing")

    @reg.register("box")
    class Box:
        def __init__(self, size: int = 1, color: str = "red") -> None:
            self.size, self.color = size, color

    @reg.register()
    def make_ball(radius: float = 1.0) -> dict:
        return {"radius": radius}

    return reg


def test_build_from_spec_and_name() -> None:
    reg = make()
    assert reg.build({"name": "box", "size": 3}).size == 3
    assert reg.build("make_ball") == {"radius": 1.0}
    assert reg.build({"name": "box"}, color="blue").color == "blue"
    assert reg.names() == ["box", "make_ball"]


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'box'"):
        make().get("bx")


def test_unknown_option_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="no option 'sise'.*Did you mean 'size'"):
        make().build({"name": "box", "sise": 2})


def test_missing_name_and_double_registration() -> None:
    reg = make()
    with pytest.raises(ConfigError, match="needs a 'name'"):
        reg.build({"size": 2})
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("box")(lambda: None)


def test_options_passed_on_to_the_parent_class_are_checked() -> None:
    reg: Registry = Registry("thing")

    class Base:
        def __init__(self, parts: list, /, *, temp: float = 0.1) -> None:
            self.parts, self.temp = parts, temp

    @reg.register("child")
    class Child(Base):
        def __init__(self, size: int = 1, **rest: float) -> None:
            super().__init__([size], **rest)

    assert reg.build({"name": "child", "size": 2, "temp": 0.5}).temp == 0.5
    with pytest.raises(
        ConfigError, match="no option 'tmp'.*Did you mean 'temp'.*Options: size, temp$"
    ):
        reg.build({"name": "child", "tmp": 0.5})
    with pytest.raises(ConfigError, match="no option 'parts'"):  # positional-only: not an option
        reg.build({"name": "child", "parts": []})
