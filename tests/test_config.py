"""Config loading: every YAML in configs/ validates; overrides, types and errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ecgqa.config import ConfigError, field, load_config, parse_overrides, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _schema(folder: str):
    if folder == "model":
        from ecgqa.models.fusion import ModelConfig

        return ModelConfig
    if folder == "encoder":
        from ecgqa.models.encoders.pretrain import EncoderPretrainConfig

        return EncoderPretrainConfig
    if folder == "meta":
        from ecgqa.meta.trainer import TrainMetaConfig

        return TrainMetaConfig
    if folder == "lora":
        from ecgqa.image_qa.train import TrainLoraConfig

        return TrainLoraConfig
    if folder == "image":
        from ecgqa.image_qa.distill import DistillConfig

        return DistillConfig
    raise AssertionError(f"configs/{folder}/ has no schema in tests/test_config.py")


def _load_accelerate(path: Path):
    """An `accelerate launch --config_file` YAML, as accelerate itself reads it."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    cfg = ClusterConfig.from_yaml_file(str(path))       # unknown top-level keys raise
    args = launch_command_parser().parse_args(["train.py"])
    for key in cfg.fsdp_config or {}:                   # launch reads these as --fsdp_* flags
        flag = key if key.startswith("fsdp_") else f"fsdp_{key}"
        assert hasattr(args, flag), f"{path.name}: unknown fsdp_config key {key}"
    return cfg


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_file_validates(path):
    folder = path.parent.name
    if folder == "accelerate":
        cfg = _load_accelerate(path)
    else:
        cfg = load_config(_schema(folder), path)
    if folder == "meta":
        from ecgqa.meta.trainer import validate

        validate(cfg)
    if folder == "lora":
        from ecgqa.image_qa.train import validate as validate_lora

        validate_lora(cfg)
    assert cfg is not None


def test_the_fsdp_config_asks_for_fsdp2_and_fits_the_recipe():
    from accelerate.utils import DistributedType

    cfg = _load_accelerate(CONFIGS / "accelerate" / "fsdp.yaml")
    assert cfg.distributed_type == DistributedType.FSDP
    assert cfg.fsdp_config["fsdp_version"] == 2
    assert cfg.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False


def test_tiny_model_config_builds_a_model():
    from ecgqa.models.fusion import EcgQaModel, ModelConfig

    model = EcgQaModel.build(load_config(ModelConfig, CONFIGS / "model" / "tiny.yaml"))
    assert model.cfg.n_ecg_tokens == 3 and model.trainable_parameters()


@dataclass
class _Inner:
    lr: float = field(0.1, help="learning rate")
    steps: int = field(5, help="steps")


@dataclass
class _Outer:
    name: str = field("x", help="name")
    inner: _Inner = field(_Inner(), help="inner")
    flags: list = field([], help="flags")
    maybe: int | None = field(None, help="optional")
    on: bool = field(False, help="switch")


def test_overrides_types_and_round_trip(tmp_path):
    (tmp_path / "c.yaml").write_text("name: y\ninner:\n  steps: 7\n")
    cfg = load_config(_Outer, tmp_path / "c.yaml", ["inner.lr=0.05", "--maybe", "3", "on=true"])
    assert (cfg.name, cfg.inner.steps, cfg.inner.lr, cfg.maybe, cfg.on) == ("y", 7, 0.05, 3, True)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Outer, tmp_path / "resolved.yaml") == cfg
    assert _Outer().inner is not _Outer().inner            # defaults are not shared
    assert parse_overrides(["a.b-c=[1, 2]"]) == {"a": {"b_c": [1, 2]}}


@pytest.mark.parametrize("overrides,match", [
    (["inner.lrr=1"], "did you mean inner.lr"),
    (["inner.steps=2.5"], "expected an integer"),
    (["inner.lr=fast"], "expected float"),
    (["on=maybe"], "expected true/false"),
    (["inner=3"], "expected a mapping"),
    (["--steps"], "needs a value"),
    (["steps"], "key=value"),
])
def test_config_errors_name_the_key_and_the_fix(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_Outer, None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Outer, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_Outer, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(_Outer, tmp_path / "list.yaml")


def test_free_form_values_must_be_finite_trees(tmp_path):
    """YAML aliases can make a free-form mapping (projector_kwargs ...) refer to itself or
    expand to billions of values; both are one-line errors, found at once."""
    from ecgqa.config import from_dict, parse_yaml, read_text
    from ecgqa.models.fusion import ModelConfig

    (tmp_path / "loop.yaml").write_text("projector_kwargs: &a {dim: 8, again: *a}\n")
    with pytest.raises(ConfigError, match="projector_kwargs: the value refers to itself"):
        load_config(ModelConfig, tmp_path / "loop.yaml")
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\nmodel: {projector_kwargs: "
                                          "{k: *i}}\n")
    data = parse_yaml(read_text(tmp_path / "laughs.yaml"), "laughs.yaml")["model"]
    with pytest.raises(ConfigError, match="more than 100000 values"):   # 10**9 leaves: not
        from_dict(ModelConfig, data, "model.")                          # walked to the end
    small = load_config(ModelConfig, None, ["projector_kwargs={dim: 8, heads: [1, 2]}"])
    assert small.projector_kwargs == {"dim": 8, "heads": [1, 2]}
