"""The image path's data: rendered ECG images, LLaVA instruction data, `ecgqa data instruct`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgqa.cli import main
from ecgqa.image_qa import dx
from ecgqa.image_qa.instruct import InstructError, build_instruct, read_instruct
from ecgqa.image_qa.render import Variation, render_image
from ecgqa.records.meta import SNOMED_NAMES
from ecgqa.records.plot import PlotStyle
from ecgqa.records.read import read_record
from tests.conftest import REAL

SMALL = (96, 192)


@pytest.fixture(scope="module")
def record():
    return read_record(REAL / "cinc2021" / "E07500")


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize("size", [(96, 192), (100, 300), (256, 128)])
def test_render_has_exactly_the_size_asked(record, size):
    img = render_image(record, size, Variation(), np.random.default_rng(0))
    assert img.mode == "RGB" and (img.height, img.width) == size


def test_render_same_seed_identical_other_seed_differs(record):
    a = render_image(record, SMALL, Variation(), np.random.default_rng(7))
    b = render_image(record, SMALL, Variation(), np.random.default_rng(7))
    c = render_image(record, SMALL, Variation(), np.random.default_rng(8))
    assert np.array_equal(_pixels(a), _pixels(b))
    assert np.abs(_pixels(a) - _pixels(c)).mean() > 2.0


def test_no_variation_is_the_plain_printout(record):
    plain = render_image(record, (160, 320))
    none = render_image(record, (160, 320), Variation.none(), np.random.default_rng(5))
    varied = render_image(record, (160, 320), Variation(), np.random.default_rng(5))
    assert np.array_equal(_pixels(plain), _pixels(none))          # rng is not used
    assert not np.array_equal(_pixels(plain), _pixels(varied))
    px = _pixels(plain).reshape(-1, 3)
    assert PlotStyle().major_color.startswith("#e8")               # red grid on white
    pink = (px[:, 0] > 200) & (px[:, 0] - px[:, 1] > 12) & (np.abs(px[:, 1] - px[:, 2]) < 12)
    assert pink.mean() > 0.2                                       # the standard red grid
    dark = (px.max(axis=1) < 100).mean()
    assert 0.002 < dark < 0.2                                     # traces drawn
    assert (px.min(axis=1) == 255).mean() > 0.05                  # white margins, paper


def test_variation_changes_the_grid_and_stays_an_ecg(record):
    imgs = [_pixels(render_image(record, (160, 320), Variation(p_standard_grid=0.0),
                                 np.random.default_rng(s))) for s in range(4)]
    means = [im.reshape(-1, 3).mean(axis=0) for im in imgs]
    assert max(np.abs(m - means[0]).max() for m in means) > 1.0   # colours differ
    for im in imgs:
        assert 0.002 < (im.max(axis=2) < 110).mean() < 0.25       # traces still drawn


def test_render_refuses_a_bad_size(record):
    with pytest.raises(ValueError, match="size"):
        render_image(record, (0, 100))


# --------------------------------------------------------------------------- read_instruct


def _dataset(tmp_path: Path, entries, name="train.json") -> Path:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "a.png")
    (root / name).write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return root


def _entry(**kw) -> dict:
    e = {"id": "q1", "image": "images/a.png",
         "conversations": [{"from": "human", "value": "<image>\nIs the rhythm regular?"},
                           {"from": "gpt", "value": "yes"}]}
    e.update(kw)
    return e


def test_read_instruct_parses_turns_image_position_and_meta(tmp_path):
    later = _entry(id=7, conversations=[
        {"from": "human", "value": "What is the rate?\n<image>"}, {"from": "gpt", "value": "60"},
        {"from": "human", "value": "Is it sinus?"}, {"from": "gpt", "value": "yes"}],
        question_type="single-query", answer=["60"])
    root = _dataset(tmp_path, [_entry(split="train"), later])
    a, b = read_instruct(root / "train.json")
    assert a.id == "q1" and a.turns == (("Is the rhythm regular?", "yes"),) and a.image_first
    assert a.image == (root / "images" / "a.png").resolve() and a.meta == {"split": "train"}
    assert b.id == "7" and not b.image_first
    assert b.turns == (("What is the rate?", "60"), ("Is it sinus?", "yes"))
    assert b.meta == {"question_type": "single-query", "answer": ["60"]}
    assert read_instruct(root, split="train") == [a, b]


def test_a_path_escaping_image_entry_is_refused(tmp_path):
    outside = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(outside)               # exists: refused for escaping only
    root = _dataset(tmp_path, [])
    os.symlink(outside, root / "images" / "link.png")
    for image, why in (("../x.png", "escapes"), ("images/../../x.png", "escapes"),
                       (str(outside), "absolute"), (str(root / "images" / "a.png"), "absolute"),
                       ("images/link.png", "escapes")):
        (root / "train.json").write_text(json.dumps([_entry(), _entry(id="bad", image=image)]))
        with pytest.raises(InstructError) as ex:
            read_instruct(root / "train.json")
        msg = str(ex.value)
        assert why in msg and "entry 1" in msg and "train.json" in msg and "\n" not in msg, image


def test_root_argument_bounds_the_images(tmp_path):
    root = _dataset(tmp_path, [_entry(image="a.png")])
    assert read_instruct(root / "train.json", root=root / "images")[0].image.name == "a.png"
    with pytest.raises(InstructError, match="escapes"):
        (root / "train.json").write_text(json.dumps([_entry(image="../train.json")]))
        read_instruct(root / "train.json", root=root / "images")


def _conv(*pairs):
    return [{"from": r, "value": v} for r, v in pairs]


@pytest.mark.parametrize("content,needle", [
    ("[{", "malformed JSON at line 1"),
    ({"id": "q1"}, "expected a JSON list"),
    (["not an object"], "entry 0: expected an object"),
    ([{"id": "q1", "image": "images/a.png"}], "missing field(s) conversations"),
    ([_entry(id=None)], "id must be"),
    ([_entry(image="")], "non-empty relative path"),
    ([_entry(image=3)], "non-empty relative path"),
    ([_entry(image="images/missing.png")], "not found"),
    ([_entry(conversations=[])], "non-empty list"),
    ([_entry(conversations="hi")], "non-empty list"),
    ([_entry(conversations=_conv(("gpt", "yes"), ("human", "<image>\nQ?")))], "alternate"),
    ([_entry(conversations=_conv(("user", "<image>\nQ?"), ("assistant", "yes")))],
     "'user'"),
    ([_entry(conversations=_conv(("human", "<image>\nQ?")))], "no 'gpt' answer"),
    ([_entry(conversations=[{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}])],
     "string 'value'"),
    ([_entry(conversations=_conv(("human", "<image>\nQ?"), ("gpt", "<image>")))],
     "may appear once"),
    ([_entry(conversations=_conv(("human", "<image><image>\nQ?"), ("gpt", "a")))],
     "may appear once"),
])
def test_malformed_entries_are_refused_in_one_line(tmp_path, content, needle):
    root = _dataset(tmp_path, content)
    with pytest.raises(InstructError) as ex:
        read_instruct(root / "train.json")
    msg = str(ex.value)
    assert needle in msg and str(root / "train.json") in msg and "\n" not in msg


def test_read_instruct_folder_needs_a_split_and_the_file(tmp_path):
    root = _dataset(tmp_path, [_entry()])
    with pytest.raises(InstructError, match="split="):
        read_instruct(root)
    with pytest.raises(InstructError, match="valid.json: instruction file not found"):
        read_instruct(root, split="valid")


# --------------------------------------------------------------------------- Dx questions


def test_dx_questions_are_balanced_and_never_contradict_an_overlapping_label():
    pool = sorted(SNOMED_NAMES)
    codes = ["426177001", "59118001", "99999999"]      # sinus bradycardia, RBBB, unnamed
    overlapping = {"sinus rhythm", "bradycardia", "sinus tachycardia", "sinus arrhythmia",
                   "bundle branch block", "complete right bundle branch block",
                   "incomplete right bundle branch block", "right bundle branch block",
                   "sinus bradycardia"}
    negatives: set[str] = set()
    for seed in range(50):
        asked = dx.questions(codes, pool, np.random.default_rng(seed))
        verify = [(q.removeprefix("Does this ECG show ").removesuffix("?"), a[0])
                  for t, q, a, _ in asked if t == "single-verify"]
        assert [a for _, a in verify].count("yes") == 2
        assert [a for _, a in verify].count("no") == 2
        assert {n for n, a in verify if a == "yes"} == {"sinus bradycardia",
                                                        "right bundle branch block"}
        negatives |= {n for n, a in verify if a == "no"}
        (t, q, answer, options), = [x for x in asked if x[0] == "single-query"]
        assert sorted(answer) == ["right bundle branch block", "sinus bradycardia"]
        assert len(options) == 4 and all(o in q for o in options)
        negatives |= set(options) - set(answer)
    assert len(negatives) > 10 and not negatives & overlapping
    assert dx.questions(["99999999"], pool, np.random.default_rng(0)) == []   # nothing named


def test_dx_split_is_by_record_and_seeded():
    keys = [f"r{i}" for i in range(100)]
    a, b = dx.split_records(keys, 0), dx.split_records(keys, 0)
    assert a == b != dx.split_records(keys, 1)
    assert [list(a.values()).count(s) for s in ("train", "valid", "test")] == [70, 15, 15]


# --------------------------------------------------------------------------- build (CLI)


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["data", "instruct", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_build_from_synthetic_ecgqa_round_trips(synth_qa, tmp_path, capsys):
    from ecgqa.qa.ecgqa import load_ecgqa

    out = tmp_path / "instruct"
    rc, stdout, err = _run(capsys, "--qa", str(synth_qa), "--out", str(out), "--max-samples",
                           "6", "--size", "96x192", "--quiet", "--seed", "3")
    assert rc == 0, err
    assert stdout.count("\n") == 1 and "images" in stdout and "comparison question" in stdout
    samples = {s: read_instruct(out, split=s) for s in ("train", "valid", "test")}
    got = [x for v in samples.values() for x in v]
    assert len(got) == 6 and len(set(x.id for x in got)) == 6
    truth = {(s.split, s.sample_id): s for s in load_ecgqa(synth_qa).samples}
    for split, items in samples.items():
        for x in items:
            qa = truth[(split, x.meta["sample_id"])]
            assert x.meta["split"] == split and not qa.is_comparison
            assert x.turns == ((qa.question, ", ".join(qa.answer)),) and x.image_first
            assert x.meta["answer"] == list(qa.answer) and x.meta["ecg_id"] == list(qa.ecg_ids)
            assert x.meta["question_type"] == qa.question_type and x.meta["options"]
            assert x.image.parent == (out / "images").resolve()
            assert x.image.name == f"{qa.ecg_ids[0]:05d}.png"
    pngs = sorted((out / "images").iterdir())
    assert {p.name for p in pngs} == {x.image.name for x in got}    # each record rendered once
    assert Image.open(pngs[0]).size == (192, 96)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {**{s: len(v) for s, v in samples.items()}, "images": len(pngs)}
    assert meta["seed"] == 3 and meta["variation"]["rotation_deg"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instruct"]   # no temp folder left


def test_meta_train_classes_only_leave_every_held_out_class_out(synth_qa, tmp_path, capsys):
    from ecgqa.meta.adapter import load_class_split, save_class_split
    from ecgqa.meta.data import load_available
    from ecgqa.qa.episodes import class_key, split_classes

    _, _, every = load_available(str(synth_qa), None, "template", [])
    split = split_classes(every, test_fraction=0.3, seed=0)
    by_id = {(s.split, s.sample_id): class_key(s) for s in every}
    out = tmp_path / "train-classes"
    rc, _, err = _run(capsys, "--qa", str(synth_qa), "--out", str(out), "--classes",
                      "meta-train", "--question-types", "single-verify", "--size", "32x64",
                      "--no-variation", "--quiet")
    assert rc == 0, err
    got = [x for sp in ("train", "valid", "test") for x in read_instruct(out, split=sp)]
    keys = {by_id[(x.meta["split"], x.meta["sample_id"])] for x in got}
    assert keys and keys <= split.meta_train
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"]["held-out class"] > 0 and meta["inputs"]["classes"] == "meta-train"
    # an adapter's own split (another seed) decides when given
    other = split_classes(every, test_fraction=0.3, seed=4)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "config.yaml").write_text("{}")
    (adapter / "meta.yaml").write_text("{}")
    save_class_split(other, {}, adapter)
    assert load_class_split(adapter)["meta_train"] == other.meta_train
    out2 = tmp_path / "adapter-classes"
    rc, _, err = _run(capsys, "--qa", str(synth_qa), "--out", str(out2), "--classes",
                      str(adapter), "--question-types", "single-verify", "--size", "32x64",
                      "--no-variation", "--quiet")
    assert rc == 0, err
    got2 = [x for sp in ("train", "valid", "test") for x in read_instruct(out2, split=sp)]
    assert {by_id[(x.meta["split"], x.meta["sample_id"])] for x in got2} <= other.meta_train
    assert {x.id for x in got2} != {x.id for x in got}


def test_build_from_challenge_dx_codes(real, tmp_path, capsys):
    out = tmp_path / "dx"
    rc, stdout, err = _run(capsys, "--dx", str(real / "cinc2021"), "--out", str(out),
                           "--max-samples", "5", "--size", "64x128", "--no-variation",
                           "--quiet")
    assert rc == 0, err
    got = [x for s in ("train", "valid", "test") for x in read_instruct(out, split=s)]
    assert len(got) == 5
    for x in got:
        codes = x.meta["dx_codes"]
        header = REAL / "cinc2021" / (x.meta["record"].split("-", 1)[1] + ".hea")
        assert tuple(codes) == read_record(header).meta.dx_codes
        names = {SNOMED_NAMES[c][1] for c in codes if c in SNOMED_NAMES}
        (question, answer), = x.turns
        if x.meta["question_type"] == "single-verify":
            asked = question.removeprefix("Does this ECG show ").removesuffix("?")
            assert answer == ("yes" if asked in names else "no")
        else:
            assert x.meta["question_type"] == "single-query"
            assert x.meta["answer"] == [o for o in x.meta["options"] if o in names]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == "dx" and meta["variation"] is None
    assert meta["skipped"]["over max_samples"] > 0


def test_an_interrupted_build_leaves_nothing(synth_qa, tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_instruct(tmp_path / "out", qa=synth_qa, max_samples=3, size=(64, 128),
                       progress=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,needle", [
    ([], "exactly one of --qa"),
    (["--qa", "QA", "--dx", str(REAL / "cinc2021")], "exactly one of --qa"),
    (["--dx", str(REAL / "cinc2021"), "--records", "x.csv"], "--records goes with --qa"),
    (["--dx", str(REAL / "cinc2021"), "--size", "256"], "--size"),
    (["--dx", str(REAL / "cinc2021"), "--size", "8x8"], "--size"),
    (["--dx", str(REAL / "cinc2021"), "--max-samples", "0"], "--max-samples"),
    (["--dx", str(REAL / "cinc2021"), "--workers", "0"], "--workers"),
    (["--dx", "no/such/folder"], "not a folder"),
    (["--dx", str(REAL / "cinc2021"), "--question-types", "single-choose"], "not single-choose"),
    (["--qa", "QA", "--question-types", "comparison_consecutive-verify"], "two ECGs"),
    (["--qa", "QA", "--question-types", "bogus"], "unknown question type"),
    (["--qa", "QA", "--records", "no-such-index.csv"], "not a records index"),
    (["--qa", "."], "not an ECG-QA folder"),
    (["--dx", str(REAL / "cinc2021"), "--classes", "meta-train"], "goes with ECG-QA data"),
    (["--qa", "QA", "--classes", "no/such/adapter"], "not a saved adapter"),
])
def test_cli_errors_exit_2_in_one_line_and_write_nothing(synth_qa, tmp_path, capsys,
                                                         monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    args = [str(synth_qa) if a == "QA" else a for a in args]
    rc, stdout, err = _run(capsys, "--out", "out", "--quiet", *args)
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = _run(capsys, "--dx", str(REAL / "cinc2021"), "--out", str(out))
    assert rc == 2 and err.count("\n") == 1 and "not an empty folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
