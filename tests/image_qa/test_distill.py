"""Cross-modal distillation (ecgqa.image_qa.distill) and the image path's warm starts: a
tiny run on real PTB-XL records, the loss it minimises, saving and loading, and an
ImageQaModel that starts from a distilled encoder and a signal adapter's projector."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from ecgqa.config import ConfigError, load_config
from ecgqa.image_qa.distill import (
    DistillConfig,
    distill,
    distill_loss,
    fit,
    load_image_encoder,
    render_records,
    to_pixels,
)
from ecgqa.image_qa.encoders import TokenImageEncoder, grid_positions
from ecgqa.image_qa.loading import load_image_qa
from ecgqa.image_qa.model import ImageQaModel
from ecgqa.models.projectors import build_projector
from tests.conftest import ROOT
from tests.image_qa.test_model import QUESTION, images, tiny_model_config

LABELS = ROOT.parent / "shared" / "data" / "ptbxl-zscore-250hz" / "labels.csv"
SIZE = [32, 64]


def tiny_distill_config(out, **changes) -> DistillConfig:
    cfg = load_config(DistillConfig, None, [
        f"labels={LABELS}", f"out={out}", "image_size=[32,64]", "widths=[8,16]", "epochs=2",
        "variants=1", "max_records=24", "batch_size=8", "min_positives=2"])
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    torch.manual_seed(0)
    return distill(tiny_distill_config(tmp_path_factory.mktemp("d") / "enc"), progress=False)


def test_the_loss_is_zero_only_for_equal_tokens():
    torch.manual_seed(0)
    t = torch.randn(3, 5, 8)
    assert float(distill_loss(t, t, 1.0)) == pytest.approx(0.0, abs=1e-6)
    shifted = t + 0.5
    # MSE of a constant 0.5 shift is exactly 0.25; the cosine term only adds
    assert float(distill_loss(shifted, t, 0.0)) == pytest.approx(0.25, rel=1e-5)
    assert float(distill_loss(shifted, t, 1.0)) > 0.25


def test_token_encoder_gives_teacher_shaped_tokens_in_teacher_units():
    torch.manual_seed(0)
    enc = TokenImageEncoder(widths=(4, 8), out_dim=16, n_tokens=5, heads=2).eval()
    enc.mean.fill_(3.0)
    enc.std.fill_(2.0)
    x = torch.rand(2, 3, *SIZE) * 2 - 1
    with torch.no_grad():
        out, std = enc(x), enc.standardised(x)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out, std * 2.0 + 3.0)
    pos = grid_positions(4, 6, 16)
    assert pos.shape == (24, 16) and len({tuple(r.tolist()) for r in pos}) == 24


def test_renders_depend_only_on_seed_record_and_variant():
    paths = _record_paths(2)
    a = render_records(paths, SIZE, 3, 2, True)
    b = render_records(paths, SIZE, 3, 2, True)
    assert a.shape == (4, 32, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])          # two varied looks of one record
    assert not np.array_equal(a[0], a[2])          # two records


def _record_paths(n):
    """The first ``n`` records of the shared PTB-XL label table."""
    from ecgqa.qa.labels import read_label_table

    return [r.path for r in read_label_table(LABELS).records[:n]]


def test_fitting_lowers_the_loss_on_its_renders():
    from ecgqa.image_qa.distill import teacher_tokens
    from ecgqa.models.encoders.checkpoint import load_encoder

    paths = _record_paths(8)
    teacher = load_encoder("default")
    tokens = teacher_tokens(teacher, paths)
    mean, std = tokens.mean((0, 1)), tokens.std((0, 1)) + 1e-6
    target = torch.from_numpy((tokens - mean) / std)
    images_ = render_records(paths, SIZE, 0, 1, True)
    torch.manual_seed(0)
    student = TokenImageEncoder((8, 16), teacher.out_dim, 1, teacher.n_tokens, 4)
    cfg = dataclasses.replace(DistillConfig(), epochs=15, batch_size=4, lr=3e-3)

    def loss() -> float:
        with torch.no_grad():
            return float(distill_loss(student.standardised(to_pixels(images_)), target, 1.0))

    before = loss()
    fit(cfg, student, images_, np.arange(len(paths)), target)
    assert loss() < 0.8 * before


def test_a_run_writes_its_encoder_metrics_and_probe(distilled):
    names = {p.name for p in distilled.iterdir()}
    assert names == {"config.json", "model.safetensors", "distill_config.yaml", "metrics.json"}
    m = json.loads((distilled / "metrics.json").read_text())
    assert m["train_records"] == 24 and m["train_images"] == 24
    assert len(m["epoch_loss"]) == 2 and all(np.isfinite(m["epoch_loss"]))
    assert -1 <= m["valid_plain"]["pooled_cosine"] <= 1
    probe = m["probe"]
    if probe["codes"]:
        for col in ("signal", "image_plain", "image_varied", "image_untrained"):
            assert 0 <= probe[col]["macro_auroc"] <= 1
    enc, conf = load_image_encoder(distilled)
    assert conf["name"] == "cnn_tokens" and conf["image_size"] == SIZE
    x = torch.rand(1, 3, *SIZE) * 2 - 1
    with torch.no_grad():
        assert enc(x).shape == (1, 40, 256)


def test_bad_settings_and_a_used_out_folder_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        distill(tiny_distill_config(tmp_path / "a", epochs=0), progress=False)
    with pytest.raises(ConfigError, match="labels"):
        distill(tiny_distill_config(tmp_path / "a", labels=str(tmp_path / "none.csv")))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ConfigError, match="not an empty folder"):
        distill(tiny_distill_config(tmp_path / "b"), progress=False)
    with pytest.raises(ConfigError, match="no such file"):
        load_image_encoder(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not an image encoder"):
        load_image_encoder(tmp_path / "b")


def test_cli_error_is_one_line_with_exit_2(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"labels": str(LABELS), "out": str(tmp_path / "o"),
                                   "variants": 0}))
    res = subprocess.run([sys.executable, "-m", "ecgqa", "encoder", "distill-image",
                          "--config", str(cfg)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "variants" in res.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- warm starts


def test_a_model_starts_from_the_distilled_encoder_and_keeps_it_frozen(distilled, tmp_path):
    enc, _ = load_image_encoder(distilled)
    cfg = tiny_model_config(image_size=SIZE, image_encoder_init=str(distilled),
                            freeze_encoder=True, projector_kwargs={"dim": 16, "heads": 2})
    torch.manual_seed(0)
    model = ImageQaModel.build(cfg)
    for k, v in enc.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())

    folder = model.save_pretrained(tmp_path / "adapter")
    saved = yaml.safe_load((folder / "config.yaml").read_text())["model"]
    assert saved["image_encoder"] == "cnn_tokens" and saved["image_encoder_init"] is None
    model.eval().requires_grad_(False)
    loaded = load_image_qa(folder)
    opts = [["yes", "no"], ["no", "yes"]]
    assert torch.equal(model.score_options(images(), [QUESTION] * 2, opts),
                       loaded.score_options(images(), [QUESTION] * 2, opts))


def test_a_distilled_encoder_of_another_size_is_refused(distilled):
    cfg = tiny_model_config(image_size=[64, 128], image_encoder_init=str(distilled))
    with pytest.raises(ConfigError, match="distilled on"):
        ImageQaModel.build(cfg)


def _signal_adapter(folder, d_llm, n_tokens=4, dim=16):
    """A train-meta adapter folder as resolve_adapter reads it: its projector's weights."""
    torch.manual_seed(5)
    proj = build_projector("attention", d_enc=256, d_llm=d_llm, n_tokens=n_tokens, dim=dim,
                           heads=2)
    from safetensors.torch import save_file

    folder.mkdir()
    save_file({k: v.contiguous() for k, v in proj.state_dict().items()},
              str(folder / "projector.safetensors"))
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {
        "projector": "attention", "projector_kwargs": {"dim": dim, "heads": 2},
        "n_ecg_tokens": n_tokens}}))
    (folder / "meta.yaml").write_text("meta: {}\n")
    return proj


def test_the_projector_starts_from_a_signal_adapter(distilled, tmp_path):
    base = tiny_model_config(image_size=SIZE, image_encoder_init=str(distilled),
                             projector_kwargs={"dim": 16, "heads": 2}, n_image_tokens=4)
    proj = _signal_adapter(tmp_path / "adapter", d_llm=base.llm.tiny_hidden)
    model = ImageQaModel.build(dataclasses.replace(base, projector_init=str(tmp_path / "adapter")))
    for k, v in proj.state_dict().items():
        assert torch.equal(model.projector.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="match"):
        ImageQaModel.build(dataclasses.replace(base, n_image_tokens=8,
                                               projector_init=str(tmp_path / "adapter")))
