"""The `ecgqa` command line: help texts, info, plot, and one-line errors."""

from __future__ import annotations

import argparse
import json

import pytest

from ecgqa.cli import build_parser, main
from tests.conftest import REAL


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def _all_commands(parser=None, prefix=()):
    """(argv prefix, parser) of every command, nested ones (``data synth``) included."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _all_commands(sub, prefix + (name,))


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    _, subs = _subparsers()
    for name in subs:
        assert name in out


def test_every_option_of_every_command_is_explained(capsys):
    names = {" ".join(argv) for argv, _ in _all_commands()}
    assert {"info", "plot", "data", "data synth", "data stats", "data instruct"} <= names
    for argv, sub in _all_commands():
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = capsys.readouterr().out
        assert sub.description, argv
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (argv, action.dest)
            for opt in action.option_strings:
                assert opt in text, (argv, opt)


@pytest.mark.parametrize("command", ["train-meta", "train-lora"])
def test_the_training_commands_help_is_the_recipes(command, capsys):
    """`ecgqa train-meta --help` is the recipe's own help (the same parser as
    `accelerate launch ecgqa/train_meta.py`), every option explained."""
    with pytest.raises(SystemExit) as ex:
        main([command, "--help"])
    assert ex.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: ecgqa {command}" in text
    for option in ("--config", "--resume", "--report-to", "--help-config", "dotted overrides"):
        assert option in text, option
    assert main([command, "--config"]) == 2          # argparse's error, one line
    err = capsys.readouterr().err
    assert err.startswith("ecgqa: error: argument --config: expected one argument")
    assert err.count("\n") == 1


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_info_text_on_a_wfdb_header(capsys):
    assert main(["info", str(REAL / "ptbxl" / "00001_lr.hea")]) == 0
    out = capsys.readouterr().out
    assert "12: I II III aVR aVL aVF V1 V2 V3 V4 V5 V6" in out
    assert "100 Hz" in out and "10.00 s" in out
    assert "heart rate" in out and "bpm" in out


def test_info_json_on_a_challenge_mat_record(capsys):
    assert main(["info", str(REAL / "cinc2021" / "E07509.mat"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["leads"][:3] == ["I", "II", "III"] and info["fs_hz"] == 500
    assert {d["code"] for d in info["dx_codes"]} == {"59118001", "426177001"}
    assert info["age"] == 71 and info["sex"] == "male"
    meas = info["measurements"]
    assert 35 < meas["heart_rate_bpm"] < 70        # labelled sinus bradycardia
    assert set(info["amplitude"]) == set(info["leads"])


def test_info_options_resample_and_select(capsys):
    assert main(["info", str(REAL / "code15" / "1111"), "--fs", "500", "--duration", "10",
                 "--leads", "limb", "--json", "--no-measure"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fs_hz"] == 500 and info["original_fs_hz"] == 400
    assert info["n_samples"] == 5000 and len(info["leads"]) == 6
    assert info["measurements"] is None


def test_plot_writes_a_png_of_the_paper_size(tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "deep" / "ecg.png"
    assert main(["plot", str(REAL / "cinc2021" / "E07500.hea"), "--out", str(out),
                 "--dpi", "100"]) == 0
    img = mpimg.imread(out)
    h, w = img.shape[:2]
    # 5 + 9 + 250 + 5 mm wide, 4 rows x 38 mm + 12 mm high, at 100 dpi
    assert abs(w - 269 / 25.4 * 100) <= 2 and abs(h - (4 * 38 + 12) / 25.4 * 100) <= 2
    dark = (img[..., :3].max(axis=2) < 0.3).mean()
    assert 0.005 < dark < 0.2                      # traces drawn, not a black page
    assert [p.name for p in out.parent.iterdir()] == ["ecg.png"]   # no temp file left


@pytest.mark.parametrize("args,needle", [
    (["--out", "x.txt"], "--out"),
    (["--dpi", "0", "--out", "x.png"], "--dpi"),
    (["--start", "99", "--out", "x.png"], "past the end"),
    (["--leads", "I,I", "--out", "x.png"], "twice"),
])
def test_plot_bad_options_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(REAL / "ptbxl" / "00001_lr")] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_one_line(capsys):
    assert main(["info", "x", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bogus" in err
