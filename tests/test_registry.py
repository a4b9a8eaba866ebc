"""The name -> builder registries that configs choose components from."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from ecgqa.registry import ENCODERS, IMAGE_ENCODERS, PROJECTORS, Registry

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_register_returns_the_builder_and_build_passes_keyword_arguments():
    reg: Registry = Registry("widget")

    def make(size: int, colour: str = "red"):
        return (size, colour)

    assert reg.register("box")(make) is make              # usable as a plain decorator
    assert reg.get("box") is make
    assert reg.build("box", size=3) == (3, "red")
    assert reg.build("box", size=4, colour="blue") == (4, "blue")
    assert "box" in reg and "ball" not in reg


def test_names_are_sorted_whatever_the_registration_order():
    reg: Registry = Registry("widget")
    for name in ("zeta", "alpha", "mid"):
        reg.register(name)(dict)
    assert reg.names() == ["alpha", "mid", "zeta"]


def test_a_name_registered_twice_is_refused_and_the_first_builder_kept():
    reg: Registry = Registry("widget")

    @reg.register("box")
    def first():
        return 1

    with pytest.raises(ValueError, match="widget 'box' registered twice"):
        reg.register("box")(lambda: 2)
    assert reg.build("box") == 1


def test_an_unknown_name_is_a_key_error_naming_the_kind_and_every_choice():
    reg: Registry = Registry("widget")
    reg.register("ball")(lambda: None)
    reg.register("box")(lambda: None)
    with pytest.raises(KeyError, match="unknown widget 'cube'; choose one of: ball, box"):
        reg.get("cube")
    with pytest.raises(KeyError, match="unknown widget 'cube'"):
        reg.build("cube")


def test_registries_are_separate():
    a: Registry = Registry("a")
    b: Registry = Registry("b")
    a.register("x")(lambda: None)
    assert "x" in a and "x" not in b and b.names() == []


# ----------------------------------------------------------------- the project's registries


# meta.algorithm is checked by the meta trainer's validate (tests/test_config.py); nothing
# checks model.encoder or model.projector before the LLM loads, so this test does.
_KEYS = {"encoder": ENCODERS, "projector": PROJECTORS, "image_encoder": IMAGE_ENCODERS}
_NOT_NAMES = {"encoder": {"default"}}      # the shipped encoder (or a folder), not a builder


def _chosen(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _KEYS and isinstance(value, str):
                found.append((key, value))
            _chosen(value, found)
    return found


def _config_choices():
    out = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for key, value in _chosen(yaml.safe_load(path.read_text()), []):
            if value not in _NOT_NAMES.get(key, ()):
                out.append(pytest.param(key, value, id=f"{path.relative_to(CONFIGS)}:{key}"))
    return out


@pytest.fixture(scope="module")
def populated():
    """Import the modules that register builders (a registry is filled on import)."""
    for module in ("ecgqa.models.projectors", "ecgqa.models.encoders", "ecgqa.image_qa.encoders"):
        importlib.import_module(module)


def test_the_shipped_configs_choose_components_by_name():
    assert {key for key, _ in (p.values for p in _config_choices())} == set(_KEYS)


@pytest.mark.parametrize("key,name", _config_choices())
def test_every_name_a_shipped_config_chooses_is_registered(populated, key, name):
    assert name in _KEYS[key], f"{key} {name!r} is not one of {_KEYS[key].names()}"


def test_each_registry_builds_what_its_kind_says(populated):
    import torch

    assert {"resnet1d", "transformer"} <= set(ENCODERS.names())
    assert {"cnn", "cnn_tokens"} <= set(IMAGE_ENCODERS.names())
    proj = PROJECTORS.build("linear", d_enc=4, d_llm=6, n_tokens=2)
    assert proj(torch.zeros(1, 3, 4)).shape == (1, 2, 6)
