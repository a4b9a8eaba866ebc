"""Regression tests of the crash classes the fuzz campaign (tests/fuzz/kinds_models.py)
found in configs, bench suites, adapter and encoder folders, and chat images.

Each input must give a result or one :class:`~ecgqa.errors.EcgqaError` subclass with a
one-line message; never another exception, a hang or a huge allocation.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgqa.config import ConfigError, field, load_config
from tests.conftest import REAL, ROOT
from tests.fuzz.kinds_models import check_dataclass
from tests.test_config import _Inner


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text.strip() and "\n" not in text, text
    return text


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@dataclass
class _Cfg:
    name: str = field("x", help="name")
    inner: _Inner = field(_Inner(), help="inner")
    sizes: list[int] = field([1], help="sizes")
    kwargs: dict = field({}, help="kwargs")
    maybe: int | None = field(None, help="optional")
    on: bool = field(False, help="switch")


# --------------------------------------------------------------------------- config.py


@pytest.mark.parametrize("text", [
    "name: [unclosed\n",                                  # syntax: PyYAML's 5-line message
    "name: !!python/object/apply:os.system ['true']\n",   # an unsafe tag
    "name: *undefined\n",                                 # an undefined alias
    "inner:\n\tlr: 1\n",                                  # a tab
    "name: !!int x\n",                                    # constructor ValueError
    "name: 2001-13-45\n",                                 # a timestamp out of range
    "name: !!timestamp x\n",                              # constructor AttributeError
    "sizes: [" + "9" * 5000 + "]\n",                      # int beyond Python's digit limit
    "sizes: " + "[" * 60000 + "]" * 60000 + "\n",         # RecursionError in the composer
    "a: 1\n---\nb: 2\n",                                  # two documents
])
def test_any_broken_yaml_is_one_config_error(tmp_path, text):
    with pytest.raises(ConfigError, match="invalid YAML") as err:
        load_config(_Cfg, _write(tmp_path / "c.yaml", text))
    assert "c.yaml" in _one_line(err)


@pytest.mark.parametrize("data", [b"name: \xe9t\xe9\n", "name: x\n".encode("utf-16"),
                                  b"name: \xed\xa0\x80\n"])
def test_a_config_that_is_not_utf8_is_refused(tmp_path, data):
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load_config(_Cfg, _write(tmp_path / "c.yaml", data))
    _one_line(err)
    assert load_config(_Cfg, _write(tmp_path / "c.yaml", b"\xef\xbb\xbfname: y\n")).name == "y"


@pytest.mark.parametrize("text", ["1: 2\n", "inner:\n  true: 1\n", "null: 3\n"])
def test_non_string_keys_are_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="is not a name") as err:
        load_config(_Cfg, _write(tmp_path / "c.yaml", text))
    _one_line(err)


def test_a_billion_laughs_is_refused_quickly_with_a_short_message(tmp_path):
    levels = ["&b0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"&b{k} [" + ", ".join([f"*b{k - 1}"] * 10) + "]" for k in range(1, 10)]
    text = f"name: [{', '.join(levels)}]\nsizes: *b9\n"
    with pytest.raises(ConfigError, match="expected a string") as err:
        load_config(_Cfg, _write(tmp_path / "c.yaml", text))
    assert len(_one_line(err)) < 400


def test_self_referencing_aliases_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="expected a number") as err:
        load_config(_Cfg, _write(tmp_path / "c.yaml", "sizes: &x [*x]\n"))
    _one_line(err)


@pytest.mark.parametrize("override,match", [
    ("inner.lr=.nan", "finite"), ("inner.lr=.inf", "finite"), ("inner.lr=1e400", "finite"),
    ("inner.steps=.inf", "expected int"), ("maybe=-.inf", "expected int"),
    ("name=null", "expected a string"),
])
def test_non_finite_numbers_and_null_strings_are_refused(override, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(_Cfg, None, [override])
    _one_line(err)


@pytest.mark.parametrize("overrides,match", [
    (["name=["], "invalid YAML"), (["name={a"], "invalid YAML"),
    (["name=%TAG"], "invalid YAML"), (["name=" + "[" * 60000], "invalid YAML"),
    (["name=!!python/name:os.system"], "invalid YAML"),
    (["inner=3", "inner.lr=1"], "not a section"), (["a..b=1"], "needs a name"),
    (["=1"], "needs a name"), (["inner.=1"], "needs a name"),
])
def test_bad_overrides_are_one_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(_Cfg, None, overrides)
    _one_line(err)


def test_short_is_bounded_and_one_line():
    from ecgqa.config import short

    deep: list = []
    deep.append(deep)
    for value in ("a\nb" * 10_000, deep, {i: [i] * 1000 for i in range(1000)}, 10 ** 5000):
        text = short(value)
        assert "\n" not in text and len(text) < 400


YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["name", "inner.lr", "inner.steps", "sizes", "kwargs", "maybe",
                            "on", "inner", "unknown"]), value=YAML_SCALARS)
def test_any_yaml_value_in_any_field_gives_a_config_or_a_config_error(key, value):
    """Property: every field of the schema takes any YAML value without another exception;
    an accepted config holds the declared types and finite numbers."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    if text.endswith("..."):
        text = text[:-3].strip()
    try:
        cfg = load_config(_Cfg, None, [f"{key}={text}"])
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    import math

    assert isinstance(cfg.name, str) and isinstance(cfg.on, bool)
    assert isinstance(cfg.inner.lr, float) and math.isfinite(cfg.inner.lr)
    assert type(cfg.inner.steps) is int and all(type(s) is int for s in cfg.sizes)


def _keys(family: str) -> list[str]:
    """Every dotted key of configs/FAMILY/tiny.yaml (sections included)."""
    out = []

    def walk(node, prefix):
        for k, v in node.items():
            out.append(prefix + k)
            if isinstance(v, dict):
                walk(v, prefix + k + ".")

    walk(yaml.safe_load((ROOT / "configs" / family / "tiny.yaml").read_text()), "")
    return out


SCHEMAS = {"meta": "ecgqa.meta.trainer:TrainMetaConfig",
           "lora": "ecgqa.image_qa.train:TrainLoraConfig",
           "model": "ecgqa.models.fusion:ModelConfig",
           "encoder": "ecgqa.models.encoders.pretrain:EncoderPretrainConfig"}
ODD_VALUES = st.sampled_from([float("nan"), float("inf"), -float("inf"), None, 10 ** 30, -1,
                              "", [], {}, [float("nan")], True])


@pytest.mark.parametrize("family", sorted(SCHEMAS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_in_any_real_config_field_loads_or_is_refused(family, data):
    """Property over the real files in configs/: one key of tiny.yaml set to any value."""
    import importlib

    module, name = SCHEMAS[family].split(":")
    cls = getattr(importlib.import_module(module), name)
    key = data.draw(st.sampled_from(_keys(family)), label="key")
    value = data.draw(st.one_of(ODD_VALUES, YAML_SCALARS), label="value")
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    try:
        cfg = load_config(cls, ROOT / "configs" / family / "tiny.yaml", [f"{key}={text}"])
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        check_dataclass(cfg)            # declared types, finite floats


# --------------------------------------------------------------------------- bench suite


def _suite(tmp_path: Path, **changes) -> Path:
    tree = yaml.safe_load((ROOT / "eval" / "suites" / "tiny.yaml").read_text())
    tree.update(changes)
    return _write(tmp_path / "suite.yaml", yaml.safe_dump(tree))


@pytest.mark.parametrize("changes,match", [
    ({"n_way": list(range(1, 3001)), "k_shot": list(range(1, 3001))}, "cells"),
    ({"n_way": [2, 2]}, "lists 2 twice"),
    ({"leads": ["12-lead", "12-lead"]}, "twice"),
    ({"leads": ["I," * 20000 + "II"]}, "more leads"),
])
def test_suite_grids_that_cannot_run_are_refused_before_they_are_built(tmp_path, changes,
                                                                       match):
    from ecgqa.bench.suite import SuiteConfig, validate

    cfg = load_config(SuiteConfig, _suite(tmp_path, **changes))
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
    _one_line(err)


# --------------------------------------------------------------------------- adapters


@pytest.fixture
def adapter(tiny_adapter, tmp_path) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, folder)
    return folder


def _edit_yaml(path: Path, edit) -> None:
    tree = yaml.safe_load(path.read_text())
    edit(tree)
    path.write_text(yaml.safe_dump(tree))


class _Marker:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_load_adapter_takes_the_llm_source_as_an_override(adapter):
    from ecgqa.meta.adapter import load_adapter

    model, _, _ = load_adapter(adapter, source="tiny-llama")
    assert type(model.llm).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("name", ["projector.safetensors", "meta.safetensors"])
@pytest.mark.parametrize("how", ["pickle", "torch-save"])
def test_a_pickle_where_safetensors_belong_is_refused_unread(adapter, tmp_path, name, how):
    from ecgqa.errors import EcgqaError
    from ecgqa.meta.adapter import load_adapter

    marker = tmp_path / "UNPICKLED"
    if how == "pickle":
        (adapter / name).write_bytes(pickle.dumps({"w": _Marker(str(marker))}))
    else:
        torch.save({"w": torch.zeros(2), "x": _Marker(str(marker))}, adapter / name)
    with pytest.raises(EcgqaError, match="not safetensors") as err:
        load_adapter(adapter)
    _one_line(err)
    assert not marker.exists()


def _header_mutation(path: Path, how: str) -> None:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    name = sorted(k for k in header if k != "__metadata__")[0]
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return
    if how == "length":
        path.write_bytes(struct.pack("<Q", 2 ** 40) + data[8:])
        return
    if how == "huge":
        header[name]["shape"] = [2 ** 40, 2 ** 40]
    elif how == "offsets":
        header[name]["data_offsets"] = [0, len(body) + 2 ** 30]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


@pytest.mark.parametrize("how", ["truncated", "length", "huge", "offsets"])
def test_corrupt_projector_files_are_saved_model_errors(adapter, how):
    from ecgqa.meta.adapter import load_adapter
    from ecgqa.models.fusion import SavedModelError

    _header_mutation(adapter / "projector.safetensors", how)
    with pytest.raises(SavedModelError, match="projector.safetensors") as err:
        load_adapter(adapter)
    _one_line(err)


@pytest.mark.parametrize("how", ["shape", "rename", "nan", "dtype"])
def test_projector_tensors_that_do_not_fit_are_refused(adapter, how):
    from safetensors.torch import load_file, save_file

    from ecgqa.meta.adapter import load_adapter
    from ecgqa.models.fusion import SavedModelError

    path = adapter / "projector.safetensors"
    state = {k: v.clone() for k, v in load_file(str(path)).items()}
    k = sorted(state)[0]
    if how == "shape":
        state[k] = torch.zeros(3, 5)
    elif how == "rename":
        state[k + "x"] = state.pop(k)
    elif how == "nan":
        state[k].view(-1)[0] = float("nan")
    else:
        state[k] = state[k].to(torch.int64)
    save_file(state, str(path))
    with pytest.raises(SavedModelError, match="projector.safetensors") as err:
        load_adapter(adapter)
    _one_line(err)


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.clear(), "mappings 'model' and 'template'"),
    (lambda t: t["model"]["llm"].update(tiny_hidden=10 ** 9), "out of range"),
    (lambda t: t["model"]["llm"].update(tiny_layers=10 ** 6), "out of range"),
    (lambda t: t["model"]["llm"].update(tiny_hidden=65), "even"),
    (lambda t: t["model"]["llm"].update(seed=2 ** 70), "out of range"),
    (lambda t: t["model"]["llm"].update(attn_implementation="x"), "cannot be built"),
    (lambda t: t["model"]["projector_kwargs"].update(dim=10 ** 9), "far larger"),
    (lambda t: t["model"]["projector_kwargs"].update(heads=3), "cannot be built"),
    (lambda t: t["model"].update(projector="nope"), "cannot be built"),
    (lambda t: t["model"].update(encoder="resnet1d"), "not a saved encoder"),
    (lambda t: t["model"].update(n_ecg_tokens=-1), "n_ecg_tokens"),
    (lambda t: t["model"].update(score_normalise="x"), "score_normalise"),
    (lambda t: t["template"].update(single="no marker"), "template.single"),
    (lambda t: t["template"].update(system=3), "template needs"),
    (lambda t: t["model"].update(n_ecg_tokens=float("nan")), "expected int"),
])
def test_bad_saved_model_configs_are_refused_before_anything_big_is_built(adapter, edit,
                                                                          match):
    from ecgqa.meta.adapter import load_adapter
    from ecgqa.models.fusion import SavedModelError

    _edit_yaml(adapter / "config.yaml", edit)
    with pytest.raises(SavedModelError, match=match) as err:
        load_adapter(adapter)
    _one_line(err)


@pytest.mark.parametrize("text,match", [
    ("", "expected a mapping 'meta'"), ("meta: 3\n", "expected a mapping 'meta'"),
    ("meta:\n  algorithm: nope\n", "not one of"), ("meta:\n  inner_lr: -1\n", "inner_lr"),
    ("meta:\n  inner_lr: .nan\n", "finite"), ("meta: [\n", "invalid YAML"),
    ("meta:\n  inner_vocab: support\n", "inner_vocab 'support' is not one of full, answers, top"),
])
def test_bad_meta_yaml_is_an_adapter_error(adapter, text, match):
    from ecgqa.meta.adapter import AdapterError, load_adapter, load_meta_config

    _write(adapter / "meta.yaml", text)
    for fn in (load_meta_config, load_adapter):
        with pytest.raises(AdapterError, match=match) as err:
            fn(adapter)
        _one_line(err)


def test_meta_safetensors_must_hold_the_algorithms_own_tensors(adapter):
    from safetensors.torch import save_file

    from ecgqa.meta.adapter import AdapterError, load_adapter

    _edit_yaml(adapter / "meta.yaml", lambda t: t["meta"].update(algorithm="metasgd"))
    (adapter / "meta.safetensors").unlink()               # Meta-SGD's rates are missing
    with pytest.raises(AdapterError, match="missing") as err:
        load_adapter(adapter)
    _one_line(err)
    save_file({"lrs.0": torch.zeros(7, 7)}, str(adapter / "meta.safetensors"))
    with pytest.raises(AdapterError, match="do not belong") as err:
        load_adapter(adapter)
    _one_line(err)


@pytest.mark.parametrize("body", [
    "", "[]", '{"by": "attribute"}', '{"by": "x", "test_units": [], "meta_train": []}',
    '{"by": "attribute", "test_units": [1], "meta_train": []}',
    '{"by": "attribute", "test_units": [], "meta_train": [NaN]}',
    '{"by": "attribute", "test_units": [], "meta_train": [[1, ["a"], [NaN]]]}',
    '{"by": "attribute", "test_units": [], "meta_train": [[true, [], []]]}',
    "[" * 100_000, '{"by": "attribute", "test_units": [' + "9" * 5000 + "]}",
])
def test_bad_classes_json_is_an_adapter_error(adapter, body):
    from ecgqa.meta.adapter import AdapterError, load_class_split

    _write(adapter / "classes.json", body)
    with pytest.raises(AdapterError, match="classes.json") as err:
        load_class_split(adapter)
    _one_line(err)


def test_a_good_classes_json_still_loads(adapter):
    from ecgqa.meta.adapter import load_class_split

    _write(adapter / "classes.json", json.dumps({
        "by": "template", "test_units": ["template:3"], "meta_train": [[3, [], ["yes"]]]}))
    split = load_class_split(adapter)
    assert split["meta_train"] == frozenset({(3, (), ("yes",))})


def test_a_path_naming_no_home_is_not_a_runtime_error():
    from ecgqa.chat import ChatError, read_image
    from ecgqa.image_qa.settings import ImageQaConfig, validate_model
    from ecgqa.meta.adapter import AdapterError, load_adapter
    from ecgqa.models.encoders import EncoderError, load_encoder

    for fn, error in ((load_adapter, AdapterError), (load_encoder, EncoderError),
                      (read_image, ChatError),
                      (lambda p: validate_model(ImageQaConfig(hf_multimodal=p)), ConfigError)):
        with pytest.raises(error) as err:
            fn("~no-such-user-xyz/thing")
        _one_line(err)


# --------------------------------------------------------------------------- encoders


@pytest.fixture
def encoder_dir(tmp_path) -> Path:
    from ecgqa.models.encoders import build_encoder, save_encoder

    enc = build_encoder("resnet1d", widths=[8, 8, 16, 16], blocks=[1, 1, 1, 1], out_dim=16)
    return save_encoder(enc, tmp_path / "enc")


def _edit_json(path: Path, edit) -> None:
    tree = json.loads(path.read_text())
    edit(tree)
    path.write_text(json.dumps(tree))


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["kwargs"].update(blocks=[10 ** 6] * 4), "far larger|parameters"),
    (lambda c: c["kwargs"].update(widths=[10 ** 6] * 4), "far larger|parameters"),
    (lambda c: c["kwargs"].update(widths=[8, 8, 16, 1e400]), "bad arguments"),
    (lambda c: c["kwargs"].update(blocks=[1, 1, 1, 1.5]), "bad arguments"),
    (lambda c: c["input_spec"].update(leads=[1, 2]), "input_spec"),
    (lambda c: c["input_spec"].update(fs=1e308, duration_s=1e308), "bad|input_spec"),
    (lambda c: c.update(input_spec=[1]), "input_spec"),
    (lambda c: c["kwargs"].update({"1": 2}), "bad arguments"),
])
def test_encoder_configs_that_do_not_fit_their_weights_are_refused(encoder_dir, edit, match):
    from ecgqa.models.encoders import EncoderError, load_encoder

    _edit_json(encoder_dir / "config.json", edit)
    with pytest.raises(EncoderError, match=match) as err:
        load_encoder(encoder_dir)
    assert "config.json" in _one_line(err) or "model.safetensors" in str(err.value)


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a": ' + "9" * 5000 + "}"])
def test_unreadable_encoder_configs_are_refused(encoder_dir, body):
    from ecgqa.models.encoders import EncoderError, load_encoder

    _write(encoder_dir / "config.json", body.encode("latin-1"))
    with pytest.raises(EncoderError, match="config.json") as err:
        load_encoder(encoder_dir)
    _one_line(err)


@pytest.mark.parametrize("state", [{}, {"stem.0.weight\nsecond line": torch.zeros(2)}])
def test_empty_or_oddly_named_weights_are_refused_without_a_hang(encoder_dir, state):
    from safetensors.torch import save_file

    from ecgqa.models.encoders import EncoderError, load_encoder

    save_file(state, str(encoder_dir / "model.safetensors"))
    with pytest.raises(EncoderError, match="do not fit|far larger") as err:
        load_encoder(encoder_dir)
    _one_line(err)


@pytest.mark.parametrize("how", ["nan", "int"])
def test_non_finite_or_integer_weights_are_refused(encoder_dir, how):
    from safetensors.torch import load_file, save_file

    from ecgqa.models.encoders import EncoderError, load_encoder

    path = encoder_dir / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(str(path)).items()}
    if how == "nan":
        state["stem.0.weight"].view(-1)[0] = float("inf")
    else:
        state["stem.0.weight"] = state["stem.0.weight"].to(torch.int64)
    save_file(state, str(path))
    with pytest.raises(EncoderError, match="NaN or infinite" if how == "nan" else "dtype") as e:
        load_encoder(encoder_dir)
    _one_line(e)


def test_a_plain_state_file_asking_for_a_huge_network_is_refused(encoder_dir, tmp_path):
    from ecgqa.models.encoders import EncoderError, load_encoder

    shutil.copy(encoder_dir / "model.safetensors", tmp_path / "w.safetensors")
    with pytest.raises(EncoderError, match="far larger|parameters") as err:
        load_encoder(tmp_path / "w.safetensors", name="resnet1d", widths=[8, 8, 16, 16],
                     blocks=[10 ** 6] * 4, out_dim=16)
    _one_line(err)


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def ecg_image():
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import read_record

    return render_image(read_record(REAL / "ptbxl" / "00001_lr"), (128, 256))


@pytest.mark.parametrize("orientation,size", [(1, (256, 128)), (6, (128, 256)),
                                              (8, (128, 256)), (3, (256, 128))])
def test_the_exif_orientation_of_a_photo_is_applied(tmp_path, ecg_image, orientation, size):
    from PIL import Image

    from ecgqa.chat import read_image

    exif = Image.Exif()
    exif[0x0112] = orientation
    ecg_image.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "photo.jpg").size == size


def _png(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(12_000, 9_000), (100_000, 100_000)])
def test_huge_declared_images_are_refused_from_the_header(tmp_path, size):
    from ecgqa.chat import ChatError, read_image

    with pytest.raises(ChatError, match="megapixels") as err:
        read_image(_write(tmp_path / "bomb.png", _png(*size)))
    _one_line(err)


def test_only_picture_formats_are_opened(tmp_path, ecg_image):
    from ecgqa.chat import ChatError, read_image

    ecg_image.save(tmp_path / "ecg.tga", "TGA")
    with pytest.raises(ChatError, match="not a PNG, JPEG") as err:
        read_image(tmp_path / "ecg.tga")
    _one_line(err)


def test_transparency_is_white_paper_and_16_bit_greys_keep_their_contrast(tmp_path, ecg_image):
    import numpy as np
    from PIL import Image

    from ecgqa.chat import read_image

    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    assert np.asarray(read_image(tmp_path / "clear.png")).min() == 255
    grey = np.asarray(ecg_image.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    back = np.asarray(read_image(tmp_path / "grey16.png"))
    assert back.min() == 0 and back.max() == 255 and np.unique(back).size > 2


# --------------------------------------------------------------------------- LoRA adapters


@pytest.fixture(scope="module")
def lora_saved(tmp_path_factory) -> Path:
    """A tiny LoRA image adapter (configs/lora/tiny.yaml's model), untrained, saved."""
    from ecgqa.image_qa.model import ImageQaModel
    from ecgqa.image_qa.train import TrainLoraConfig

    cfg = load_config(TrainLoraConfig, ROOT / "configs" / "lora" / "tiny.yaml")
    return ImageQaModel.build(cfg.model).save_pretrained(
        tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture
def lora(lora_saved, tmp_path) -> Path:
    return Path(shutil.copytree(lora_saved, tmp_path / "run" / "adapter"))


def _load_lora(folder: Path):
    from ecgqa.chat.adapters import image_adapter_folder, load_image_model

    return load_image_model(image_adapter_folder(folder))


@pytest.mark.parametrize("mutate,match", [
    (lambda f: (f / "adapter_model.safetensors").rename(f / "adapter_model.bin"),
     "never loaded"),
    (lambda f: _edit_json(f / "adapter_config.json", lambda c: c.update(r=10 ** 6)), "1..4096"),
    (lambda f: _edit_json(f / "adapter_config.json", lambda c: c.update(r=8)), "rank r=8"),
    (lambda f: _edit_json(f / "adapter_config.json", lambda c: c.update(
        layer_replication=[[0, 2]] * 100)), "not supported"),
    (lambda f: _write(f / "adapter_config.json", "[" * 100_000), "adapter_config.json"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t["model"]["projector_kwargs"].update(
        dim=30_000)), "far larger"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t["model"]["encoder_kwargs"].update(
        widths=[20_000] * 3)), "far larger"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t["model"]["llm"].update(
        tiny_layers=10 ** 6)), "out of range"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t["model"]["projector_kwargs"].update(
        heads={"a": 1})), "attention projector cannot be built"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t.pop("model")), "mappings 'model'"),
    (lambda f: _edit_yaml(f / "config.yaml", lambda t: t["prompt"].update(first=3)),
     "a prompt needs"),
    (lambda f: (f / "vision.safetensors").unlink(), "vision.safetensors"),
    (lambda f: torch.save({"x": torch.zeros(1)}, f / "vision.safetensors"), "not safetensors"),
])
def test_bad_lora_adapter_folders_are_one_chat_error(lora, mutate, match):
    from ecgqa.chat import ChatError

    mutate(lora)
    with pytest.raises(ChatError, match=match) as err:
        _load_lora(lora)
    _one_line(err)


def test_render_settings_read_only_sane_sizes(lora):
    from ecgqa.chat import ChatError, render_settings

    run = lora.parent
    (run / "instruct").mkdir()
    (run / "config.yaml").write_text(f"data:\n  path: {run / 'instruct'}\n")
    for size, expected in (([48, 96], (48, 96)), ([-5, 10 ** 9], (32, 64)),
                           ("x", (32, 64)), ([[[]]], (32, 64))):
        (run / "instruct" / "meta.json").write_text(json.dumps({"size": size}))
        assert render_settings(lora).size == expected
    (run / "instruct" / "meta.json").write_text("[" * 100_000)    # too deep: fall back
    assert render_settings(lora).size == (32, 64)
    _write(run / "config.yaml", b"data: \xff\n")                   # not UTF-8: fall back
    assert render_settings(lora).size == (32, 64)
    # a data.path that is no path train-lora writes (was OSError: file name too long)
    for value in (["x"] * 200, "x" * 5000, 7, ""):
        (run / "config.yaml").write_text(yaml.safe_dump({"data": {"path": value}}))
        assert render_settings(lora).size == (32, 64)
    _edit_yaml(lora / "config.yaml", lambda t: t["model"].update(image_size=[8, 8]))
    with pytest.raises(ChatError, match="image_size") as err:
        render_settings(lora)
    _one_line(err)


def test_a_safetensors_header_length_that_starts_like_a_pickle_still_loads(tmp_path):
    """The u64 header length of a real file can start with 0x80 (a pickle's first byte)."""
    from safetensors.torch import save_file

    from ecgqa.models.encoders.checkpoint import read_safetensors

    path = tmp_path / "w.safetensors"
    for pad in range(300):
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(read_safetensors(path)["w"], torch.ones(2))


# --------------------------------------------------------------------------- gaps closed after
# the campaign: random-encoder sizes, input specs, LLM folders, lead lists, train.init


@pytest.mark.parametrize("name,kwargs", [
    ("resnet1d", {"widths": [100_000] * 4, "blocks": [1] * 4}),
    ("resnet1d", {"widths": [64] * 4, "blocks": [10_000] * 4}),
    ("transformer", {"d_model": 65_536, "heads": 1}),
    ("transformer", {"layers": 10_000_000}),
])
def test_an_absurd_random_encoder_is_refused_before_it_is_built(name, kwargs):
    from ecgqa.models.encoders.base import EncoderError
    from ecgqa.models.encoders.checkpoint import build_encoder
    from tests.fuzz.harness import address_space_cap

    with address_space_cap(1), pytest.raises(EncoderError, match="parameters") as err:
        build_encoder(name, **kwargs)
    _one_line(err)


@pytest.mark.parametrize("spec,match", [
    ({"fs": float("inf")}, "fs"), ({"fs": "500"}, "number"), ({"duration_s": True}, "number"),
    ({"fs": 500, "duration_s": 1e12}, "samples"), ({"leads": [1, 2]}, "lead names"),
    ({"leads": "I,II"}, "lead names"),
])
def test_bad_input_specs_are_encoder_errors(spec, match):
    from ecgqa.models.encoders.base import EncoderError, InputSpec

    with pytest.raises(EncoderError, match=match) as err:
        InputSpec.from_dict(spec)
    _one_line(err)


def test_a_lead_list_of_thousands_gets_a_short_message():
    from ecgqa.records.leads import parse_leads

    spec = ",".join(["I", "II"] * 20_000)            # (the check was quadratic: list.count)
    with pytest.raises(ValueError, match="named twice") as err:
        parse_leads(spec)
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_a_local_llm_folder_with_only_pickled_weights_is_refused(tmp_path):
    from ecgqa.models.llm import LlmConfig, LlmError, load_llm

    model, _ = load_llm(LlmConfig(source="tiny-llama", tiny_hidden=32, tiny_layers=1))
    folder = tmp_path / "llm"
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()                     # pytorch_model.bin only
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(LlmError) as err:
        load_llm(LlmConfig(source="path", path=str(folder)))
    _one_line(err)
