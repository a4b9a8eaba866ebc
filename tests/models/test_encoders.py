"""ECG encoders: registry, the (b, leads, t) -> (b, n, d) contract, masking, normalisation,
save/load (safetensors only), the shipped default on a real record, and a tiny pretrain."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgqa.cli import build_parser
from ecgqa.cli.encoder import cmd_encoder_pretrain, cmd_encoder_probe
from ecgqa.config import ConfigError, load_config
from ecgqa.models.encoders import (
    DEFAULT_ENCODER_DIR,
    EncoderError,
    InputSpec,
    build_encoder,
    load_encoder,
    prepare,
    save_encoder,
)
from ecgqa.models.encoders.pretrain import EncoderPretrainConfig, masked_bce, nt_xent, pretrain
from ecgqa.models.encoders.probe import linear_probe, macro_auroc, probe_split
from ecgqa.models.encoders.targets import LABELS, targets_from_facts
from ecgqa.records.read import read_record
from ecgqa.registry import ENCODERS
from tests.conftest import REAL, ROOT

TINY = {"resnet1d": dict(widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), out_dim=24),
        "transformer": dict(patch=50, d_model=32, layers=1, heads=4)}
EXPECTED_TOKENS = {"resnet1d": 40, "transformer": 100}
# The shipped default (docs/encoder.md): resnet1d, 40 tokens of 256, 6.3 MB of float32.
SHIPPED = {"name": "resnet1d", "n_tokens": 40, "out_dim": 256, "max_mb": 8.0, "min_mb": 4.0}


def _tiny(name: str, seed: int = 0, **spec) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_encoder(name, input_spec=InputSpec(**spec), **TINY[name]).eval()


def _ecgs(b: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(5000) / 500.0
    beats = torch.sin(2 * torch.pi * 1.2 * t) ** 15                     # spiky, ECG-like
    return beats * torch.rand(b, 12, 1, generator=g) + 0.05 * torch.randn(b, 12, 5000,
                                                                          generator=g)


def test_registry_lists_both_encoders():
    assert {"resnet1d", "transformer"} <= set(ENCODERS.names())
    with pytest.raises(EncoderError, match="choose one of"):
        build_encoder("lstm")
    with pytest.raises(EncoderError, match="bad arguments"):
        build_encoder("resnet1d", widht=3)


@pytest.mark.parametrize("name", ["resnet1d", "transformer"])
def test_shape_contract_default_size(name):
    torch.manual_seed(0)
    enc = build_encoder(name).eval()
    with torch.no_grad():
        out = enc(_ecgs(2))
    assert out.shape == (2, enc.n_tokens, enc.out_dim)
    assert enc.n_tokens == EXPECTED_TOKENS[name] and enc.out_dim == 256
    assert enc.input_spec == InputSpec() and torch.isfinite(out).all()


@pytest.mark.parametrize("n_samples", [2500, 3001, 5000])
def test_resnet_token_count_matches_formula(n_samples):
    enc = _tiny("resnet1d", duration_s=n_samples / 500.0)
    with torch.no_grad():
        assert enc(torch.randn(1, 12, n_samples)).shape[1] == enc.n_tokens


@pytest.mark.parametrize("name", ["resnet1d", "transformer"])
def test_masked_leads_do_not_matter(name):
    enc = _tiny(name)
    x = _ecgs(2)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, [2, 7]] = False
    mask[1, 11] = False
    y = x.clone()
    y[0, [2, 7]] = 100 * torch.randn(2, 5000)
    y[1, 11] = 0.0
    with torch.no_grad():
        a, b, full = enc(x, mask), enc(y, mask), enc(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)          # the mask does change what the network sees


@pytest.mark.parametrize("name", ["resnet1d", "transformer"])
@pytest.mark.parametrize("norm", ["zscore", "record"])
def test_normalisation_invariances(name, norm):
    """zscore: invariant to a gain per lead; record: to one gain for all leads (keeping the
    leads' relative amplitudes); both: to per-lead offsets. "none" is invariant to neither."""
    enc, raw = _tiny(name, normalisation=norm), _tiny(name, normalisation="none")
    x = _ecgs(2)
    shape = (2, 12, 1) if norm == "zscore" else (2, 1, 1)
    gain = torch.exp(torch.empty(shape).uniform_(-1.5, 1.5))          # 0.22x .. 4.5x
    offset = torch.randn(2, 12, 1)
    with torch.no_grad():
        a, b = enc(x), enc(x * gain + offset)
        c, d = raw(x), raw(x * gain + offset)
        e = enc(x * torch.linspace(0.5, 2.0, 12)[None, :, None])       # lead ratios changed
    # exact arithmetic gives a == b; in float32, x * gain + offset rounds by u * |offset|
    # (offsets ~N(0, 1), so |offset| < 5), which normalisation divides by the lead's std
    # times gain (>= 0.22 * ~0.3): <= ~75 u per input sample, carried through a few layers
    # of convolution sums (a few u each): 1e-4 = 1,700 u leaves room; a network that is not
    # invariant moves a by ~1e-2 (the "none" twin below)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (c - d).abs().max() > 1e-2
    assert ((a - e).abs().max() > 1e-3) == (norm == "record")


def test_all_zero_leads_stay_finite():
    enc = _tiny("resnet1d")
    x = torch.zeros(1, 12, 5000)
    with torch.no_grad():
        assert torch.isfinite(enc(x)).all()


def test_eval_is_deterministic_and_input_checked():
    enc = build_encoder("transformer", **{**TINY["transformer"], "dropout": 0.5}).eval()
    x = _ecgs(2)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(x), rtol=0, atol=0)
    with pytest.raises(EncoderError, match="12 leads"):
        enc(torch.randn(2, 8, 5000))
    with pytest.raises(EncoderError, match="lead_mask"):
        enc(x, torch.ones(2, 11, dtype=torch.bool))
    with pytest.raises(EncoderError, match="normalisation"):
        InputSpec(normalisation="minmax")


@pytest.mark.parametrize("name", ["resnet1d", "transformer"])
def test_save_load_round_trip(tmp_path, name):
    enc = _tiny(name, leads=("I", "II", "V1"))
    with torch.no_grad():      # make batch-norm statistics non-trivial
        for buf in enc.buffers():
            if buf.dtype.is_floating_point:
                buf.add_(0.1)
    save_encoder(enc, tmp_path / "enc", provenance={"note": "test"})
    back = load_encoder(tmp_path / "enc")
    x = torch.randn(2, 3, 5000)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), back(x), rtol=0, atol=0)
    assert back.input_spec.leads == ("I", "II", "V1") and not back.training
    assert back.provenance == {"note": "test"}
    cfg = json.loads((tmp_path / "enc" / "config.json").read_text())   # plain JSON only
    assert cfg["name"] == name and cfg["n_tokens"] == enc.n_tokens
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json",
                                                                   "model.safetensors"]


def test_pickled_objects_are_refused(tmp_path):
    enc = _tiny("resnet1d")
    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": enc.state_dict(), "obj": argparse.Namespace(a=1)}, bad)
    with pytest.raises(EncoderError, match="refused"):
        load_encoder(bad, name="resnet1d", **TINY["resnet1d"])
    folder = tmp_path / "fake"
    save_encoder(enc, folder)
    torch.save(argparse.Namespace(a=1), folder / "model.safetensors")  # a pickle in disguise
    with pytest.raises(EncoderError, match="safetensors"):
        load_encoder(folder)


def test_external_state_dicts(tmp_path):
    enc = _tiny("resnet1d")
    good = tmp_path / "ext.pth"
    torch.save({"model": {f"module.{k}": v for k, v in enc.state_dict().items()}}, good)
    back = load_encoder(good, name="resnet1d", **TINY["resnet1d"])
    x = _ecgs(1)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), back(x))
    with pytest.raises(EncoderError, match="needs name="):
        load_encoder(good)
    with pytest.raises(EncoderError, match="do not fit"):
        load_encoder(good, name="resnet1d", widths=(8, 16, 16, 64), blocks=(1, 1, 1, 1))
    for name in ("model.onnx", "weights.ckpt"):
        (tmp_path / name).write_bytes(b"\x00" * 16)
        with pytest.raises(EncoderError, match="supported|plain state-dict"):
            load_encoder(tmp_path / name, name="resnet1d")
    with pytest.raises(EncoderError, match="no such encoder"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(EncoderError, match="config.json"):
        load_encoder(tmp_path)


def test_shipped_default_on_a_real_record():
    weights = DEFAULT_ENCODER_DIR / "model.safetensors"
    mb = weights.stat().st_size / 1e6
    assert SHIPPED["min_mb"] < mb < SHIPPED["max_mb"]
    enc = load_encoder("default")
    assert enc.encoder_name == SHIPPED["name"] and not enc.training
    assert (enc.n_tokens, enc.out_dim) == (SHIPPED["n_tokens"], SHIPPED["out_dim"])
    # trained on the real PTB-XL records of folds 1-8 (1,442 of the shared 1,625)
    assert enc.provenance["label_table"] and enc.provenance["n_records"]["train"] > 1000
    rec = read_record(REAL / "ptbxl" / "00001_lr")                    # 100 Hz in the file
    x, mask = prepare(rec, enc.input_spec)
    n = int(round(enc.input_spec.fs * enc.input_spec.duration_s))
    assert x.shape == (12, n) and x.dtype == np.float32 and mask.all()
    with torch.no_grad():
        out = enc(torch.from_numpy(x)[None], torch.from_numpy(mask)[None])
    assert out.shape == (1, 40, 256) and torch.isfinite(out).all()


def test_prepare_masks_missing_leads():
    rec = read_record(REAL / "ptbxl" / "00001_lr", leads="I,II")
    x, mask = prepare(rec)
    assert x.shape == (12, 5000) and mask.tolist() == [True, True] + [False] * 10
    assert not x[2:].any()


def test_targets_from_facts():
    row = {"scp_codes": ["atrial fibrillation", "complete right bundle branch block"],
           "noise": {"static noise": ["I"]}, "extra_systole": None,
           "heart_axis": "left axis deviation",
           "numeric_class": {"qrs duration": "above the normal range"}}
    y, known = targets_from_facts(row)
    assert len(LABELS) == 49 == len(set(LABELS))
    on = {LABELS[i] for i in np.flatnonzero(y)}
    assert on == {"atrial fibrillation", "complete right bundle branch block",
                  "noise: static noise", "left axis deviation",
                  "qrs duration: above the normal range"}
    assert not known[LABELS.index("pr interval: within the normal range")]
    assert known[LABELS.index("atrial flutter")]


def test_loss_and_metric_maths():
    logits = torch.tensor([[0.0, 5.0]])
    y, known = torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]])
    torch.testing.assert_close(masked_bce(logits, y, known), torch.log(torch.tensor(2.0)))
    a = torch.eye(4) * 10
    assert nt_xent(a, a, 0.1) < 1e-3 < nt_xent(a, a.roll(1, 0), 0.1)
    macro, per = macro_auroc(np.array([[0, 1, 1], [1, 1, 1]]).T, np.array([[0, 1, 2], [3, 2, 1]]).T)
    assert per == {0: 1.0} and macro == 1.0      # column 1 has one class only: skipped
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 5))
    yy = (f[:, :2] > 0).astype(float)
    res = probe_split(f[:100], yy[:100], f[100:], yy[100:])
    assert res.n_labels == 2 and res.macro_auroc > 0.95


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from ecgqa.synth.dataset import write_synthetic

    out = tmp_path_factory.mktemp("encsynth") / "synth"
    write_synthetic(out, 60, seed=1, workers=1)
    return out


def test_every_encoder_config_validates(synth):
    configs = sorted((ROOT / "configs" / "encoder").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"default", "tiny"}
    for path in configs:
        cfg = load_config(EncoderPretrainConfig, path, [f"data={synth}"])
        build_encoder(cfg.encoder, **cfg.encoder_kwargs)
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(EncoderPretrainConfig, configs[0], ["epoch=3"])


def test_tiny_pretrain_lowers_loss_and_saves(synth, tmp_path):
    cfg = load_config(EncoderPretrainConfig, ROOT / "configs" / "encoder" / "tiny.yaml",
                      [f"data={synth}", f"out={tmp_path / 'enc'}", "epochs=3"])
    out = pretrain(cfg, progress=False)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    enc = load_encoder(out)
    assert enc.provenance["n_records"]["train"] > 30 and "config" in enc.provenance
    x = torch.from_numpy(np.stack([prepare(read_record(REAL / "ptbxl" / "00001_lr"))[0]] * 2))
    res = linear_probe(enc, x.numpy(), np.array([[0.0], [1.0]]), folds=2)
    assert res.n_labels == 0                    # too few examples per class: skipped, no crash


def _encoder_args(*argv: str):
    """``ecgqa encoder ARGV`` as the command line parses it."""
    return build_parser().parse_args(["encoder", *argv])


def test_commands(synth, tmp_path, capsys):
    config = str(ROOT / "configs" / "encoder" / "tiny.yaml")
    args = _encoder_args("pretrain", "--config", config, "--data", str(synth), "--out",
                         str(tmp_path / "enc"), "--quiet", "epochs=1", "lead_dropout=0")
    assert cmd_encoder_pretrain(args) == 0
    assert "val macro AUROC" in capsys.readouterr().out
    assert load_encoder(tmp_path / "enc").provenance["config"]["epochs"] == 1
    with pytest.raises(ConfigError, match="data"):
        cmd_encoder_pretrain(_encoder_args("pretrain", "--config", config, "--data",
                                           str(tmp_path / "none"), "--quiet"))
    with pytest.raises(ValueError, match="--data"):
        cmd_encoder_probe(_encoder_args("probe"))


# --------------------------------------------------------------------------- real-data pipeline

PTBXL = ROOT.parent / "shared" / "data" / "ptbxl-zscore-250hz"


def test_bandpass_spec_round_trip_and_checks(tmp_path):
    enc = _tiny("resnet1d", fs=250.0, bandpass=[0.5, 40])
    assert enc.input_spec.bandpass == (0.5, 40.0)
    save_encoder(enc, tmp_path / "enc")
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["input_spec"][
        "bandpass"] == [0.5, 40.0]
    back = load_encoder(tmp_path / "enc")
    x = torch.randn(2, 12, 2500)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), back(x), rtol=0, atol=0)
    # an encoder without a band-pass writes (and reads) the config.json it always did
    assert "bandpass" not in InputSpec().to_dict()
    assert InputSpec.from_dict({"leads": ["I"], "fs": 500, "duration_s": 10,
                                "normalisation": "record"}).bandpass is None
    for bad in ([40, 0.5], [0.5, 125.0], [0.5], "0.5-40", [True, 40]):
        with pytest.raises(EncoderError, match="bandpass"):
            InputSpec(fs=250.0, bandpass=bad)


def test_bandpass_removes_drift_and_keeps_masked_leads_zero():
    from ecgqa.models.encoders.base import bandpass_filter

    t = torch.arange(5000) / 500.0
    ecg = torch.sin(2 * torch.pi * 1.2 * t) ** 15                        # 1.2 Hz beats
    drift, hum = 2.0 * torch.sin(2 * torch.pi * 0.1 * t), torch.sin(2 * torch.pi * 100 * t)
    x = torch.stack([ecg + drift + hum, torch.zeros(5000)])[None]       # (1, 2, 5000)
    y = bandpass_filter(x, 500.0, (0.5, 40.0))
    mid = slice(1000, 4000)
    clean = bandpass_filter(ecg[None, None], 500.0, (0.5, 40.0))[0, 0]
    assert (y[0, 0, mid] - clean[mid]).abs().max() < 0.05 * clean[mid].abs().max()
    assert not y[0, 1].any()


def test_augment_shifts_and_adds_noise():
    from ecgqa.models.encoders.pretrain import augment

    x = torch.randn(3, 12, 100)
    x[:, 5] = 0.0
    y = augment(x, True, 0.0, torch.Generator().manual_seed(0))
    for i in range(3):          # each ECG is one circular shift of itself, all leads alike
        shifts = [k for k in range(100) if torch.equal(y[i], x[i].roll(k, -1))]
        assert len(shifts) == 1
    z = augment(x, False, 0.1, torch.Generator().manual_seed(0))
    assert not z[:, 5].any() and 0.05 < (z - x)[:, 0].std() < 0.2


def _label_csv(tmp_path: Path, n_train: int = 16, n_valid: int = 6) -> Path:
    """A label table of a few shared PTB-XL records (absolute paths), folds 1-8 and 9."""
    lines = (PTBXL / "labels.csv").read_text().splitlines()
    rows = [r.split(",") for r in lines[1:]]
    train = [r for r in rows if r[3] != "9"][:n_train]
    valid = [r for r in rows if r[3] == "9"][:n_valid]
    out = tmp_path / "labels.csv"
    out.write_text(lines[0] + "\n" + "".join(
        ",".join([r[0], str(PTBXL / r[1]), *r[2:]]) + "\n" for r in train + valid))
    return out


def test_table_targets_unknown_when_a_group_is_not_annotated():
    from ecgqa.models.encoders.targets import table_label_names, table_targets
    from ecgqa.qa.labels import LabelledRecord

    recs = [LabelledRecord(1, Path("a"), "p1", 1, {"rhythm": ("SR",), "form": ()}),
            LabelledRecord(2, Path("b"), "p2", 1, {"rhythm": ("AFIB",), "form": ("PVC",)}),
            LabelledRecord(3, Path("c"), "p3", 1, {"rhythm": ("SR",), "form": ("PVC",)})]
    names = table_label_names(recs, ["rhythm", "form"], 1)
    assert names == ("rhythm:SR", "rhythm:AFIB", "form:PVC")
    assert table_label_names(recs, ["rhythm", "form"], 2) == ("rhythm:SR", "form:PVC")
    y, known = table_targets(recs[0], names)
    assert y.tolist() == [1, 0, 0] and known.tolist() == [True, True, False]


@pytest.mark.skipif(not (PTBXL / "labels.csv").is_file(), reason="no shared PTB-XL subset")
def test_pretrain_on_a_label_table(tmp_path, capsys):
    """`ecgqa encoder pretrain --labels CSV` on 22 real PTB-XL records (units NU, 250 Hz):
    runs, writes safetensors + config, and reloads with the band-pass pipeline."""
    labels = _label_csv(tmp_path)
    args = _encoder_args("pretrain", "--config", str(ROOT / "configs" / "encoder" / "tiny.yaml"),
                         "--labels", str(labels), "--out", str(tmp_path / "enc"), "--quiet",
                         "epochs=2", "min_positives=2", "fs=250", "bandpass=[0.5, 40]",
                         "time_shift=true", "noise_std=0.05")
    assert cmd_encoder_pretrain(args) == 0
    assert "val macro AUROC" in capsys.readouterr().out
    out = tmp_path / "enc"
    assert {"config.json", "model.safetensors", "pretrain_config.yaml",
            "metrics.json"} <= {p.name for p in out.iterdir()}
    enc = load_encoder(out)
    assert enc.input_spec.bandpass == (0.5, 40.0) and enc.input_spec.fs == 250.0
    assert enc.provenance["n_records"] == {"train": 16, "val": 6}
    assert "rhythm:SR" in enc.provenance["labels"] and "super_class:NORM" in enc.provenance[
        "labels"]
    x, m = prepare(read_record(REAL / "cinc2021" / "HR06005"), enc.input_spec)   # mV, 500 Hz
    with torch.no_grad():
        assert torch.isfinite(enc(torch.from_numpy(x)[None], torch.from_numpy(m)[None])).all()


@pytest.mark.skipif(not (PTBXL / "labels.csv").is_file(), reason="no shared PTB-XL subset")
def test_pretrain_mixes_a_label_table_and_a_synthetic_set(synth, tmp_path):
    cfg = load_config(EncoderPretrainConfig, ROOT / "configs" / "encoder" / "tiny.yaml",
                      [f"labels={_label_csv(tmp_path)}", f"data={synth}", "epochs=1",
                       "min_positives=2", f"out={tmp_path / 'enc'}"])
    enc = load_encoder(pretrain(cfg, progress=False))
    names = enc.provenance["labels"]
    assert "rhythm:SR" in names and f"synthetic:{LABELS[0]}" in names
    assert enc.provenance["n_records"]["train"] > 16 and enc.provenance["n_records"]["val"] == 6
    nothing = load_config(EncoderPretrainConfig, ROOT / "configs" / "encoder" / "tiny.yaml",
                          [f"out={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match="data / labels"):
        pretrain(nothing)


def test_beat_targets_from_real_records():
    """Rate and RR irregularity thresholds from the R peaks: a regular sinus record (PTB-XL
    6005, sinus rhythm, ~70 bpm) is above 60 bpm and below the irregularity thresholds; a
    flat record has no beats, so its targets are unknown, not negative."""
    from ecgqa.models.encoders.targets import BEAT_LABELS, beat_targets

    def on(name: str) -> set[str]:
        rec = read_record(REAL / "cinc2021" / name)
        y, known = beat_targets(rec.signal, rec.lead_mask, rec.fs)
        assert known.all()
        return {n for n, v in zip(BEAT_LABELS, y) if v}

    assert len(BEAT_LABELS) == len(set(BEAT_LABELS)) == 16
    regular = on("HR06005")
    assert "beats:rate>=60" in regular and "beats:rate>=100" not in regular
    assert "beats:rr_cv>=0.08" not in regular
    y, known = beat_targets(np.zeros((12, 2500), np.float32), np.ones(12, bool), 250.0)
    assert not known.any() and not y.any()


@pytest.mark.skipif(not (PTBXL / "labels.csv").is_file(), reason="no shared PTB-XL subset")
def test_transfer_table_scores_the_table_probe_on_challenge_records(tmp_path):
    """Rhythm codes shared by a few PTB-XL records (NU) and the 50 CinC 2021 records (mV,
    SNOMED mapped by ecgqa.qa.codes); the 6 CinC records without a rhythm code are left out."""
    from ecgqa.models.encoders.report import load_transfer_probe, transfer_columns

    enc = _tiny("resnet1d", fs=250.0, bandpass=(0.5, 40.0))
    data = load_transfer_probe(_label_csv(tmp_path), REAL / "cinc2021", enc.input_spec,
                               min_train=2)
    assert "rhythm:SR" in data.names and "rhythm:SARRH" not in data.names   # 1 CinC positive
    assert len(data.other) == 50 and int(data.other.known.any(1).sum()) == 44
    assert data.positives(data.names.index("rhythm:SR"))[2] == 15
    table = transfer_columns({"a": enc}, labels=_label_csv(tmp_path), other=REAL / "cinc2021",
                             min_train=2)
    assert "| CinC: SR = SNOMED 426783006 NSR (15 pos) | " in table
    assert "CinC 2021: rhythm macro AUROC" in table and "PTB-XL fold 9: rhythm" in table
