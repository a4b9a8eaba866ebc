"""`ecgqa chat` with a LoRA image adapter: --image FILE and --ecg RECORD --modality image.

A tiny LoRA image adapter is trained in-process from configs/lora/tiny.yaml (a few seconds);
its instruction data says its images were 48x96, so records must be drawn at that size.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from ecgqa.chat import DISCLAIMER, NOT_SURE, ChatError, ImageSession, render_settings, repl
from ecgqa.cli import main
from tests.conftest import REAL, ROOT
from tests.image_qa.tiny_models import tiny_instruct

TINY_LORA = ROOT / "configs" / "lora" / "tiny.yaml"
ECG = REAL / "ptbxl" / "00001_lr.hea"
YES_NO_Q = "Does this ECG show sinus rhythm?"
TRAINED_SIZE = (48, 96)          # the instruction images' size; the model reads 32x64


@pytest.fixture(scope="session")
def image_adapter(tmp_path_factory) -> Path:
    """``RUN/adapter`` of a tiny LoRA run on 48x96 images whose meta.json says so."""
    from ecgqa.config import load_config
    from ecgqa.image_qa.train import LoraTrainer, TrainLoraConfig, make_accelerator

    root = tmp_path_factory.mktemp("image-chat")
    data = tiny_instruct(root / "instruct", size=TRAINED_SIZE)
    (data / "meta.json").write_text(json.dumps({"format": "llava", "size": list(TRAINED_SIZE),
                                                "variation": None}))
    cfg = load_config(TrainLoraConfig, TINY_LORA, [
        f"data.path={data}", f"train.out={root / 'run'}", "train.progress=false",
        "train.eval_every=0", "train.save_every=0"])
    trainer = LoraTrainer(cfg, make_accelerator(cfg)).setup()
    trainer.train()
    trainer.finish()
    return root / "run" / "adapter"


@pytest.fixture(scope="module")
def ecg_png(tmp_path_factory) -> Path:
    """The real record drawn as the adapter's training images were (plain, 48x96)."""
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import read_record

    path = tmp_path_factory.mktemp("png") / "00001_lr.png"
    render_image(read_record(ECG), TRAINED_SIZE).save(path)
    return path


def ask_json(*argv: str, capsys) -> dict:
    assert main(["chat", *argv, "--question", YES_NO_Q, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- answers


def test_image_answers_with_option_probabilities(image_adapter, ecg_png, capsys):
    out = ask_json("--image", str(ecg_png), "--adapter", str(image_adapter), capsys=capsys)
    assert {"answer", "options", "confidence", "record", "adapter", "modality"} <= set(out)
    assert out["modality"] == "image" and out["kind"] == "yes/no"
    assert {o["text"] for o in out["options"]} == {"yes", "no"}
    assert abs(sum(o["prob"] for o in out["options"]) - 1) < 1e-5
    assert out["confidence"] == max(o["prob"] for o in out["options"])
    assert out["record"] == str(ecg_png) and out["adapter"] == str(image_adapter)
    assert out["disclaimer"] == DISCLAIMER


def test_record_drawn_as_in_training_answers_as_its_png(image_adapter, ecg_png, capsys):
    rec = ask_json("--ecg", str(ECG), "--modality", "image", "--adapter",
                   str(image_adapter), capsys=capsys)
    png = ask_json("--image", str(ecg_png), "--adapter", str(image_adapter), capsys=capsys)
    assert rec["modality"] == "image" and rec["record"] == str(ECG)
    assert abs(sum(o["prob"] for o in rec["options"]) - 1) < 1e-5
    assert rec["options"] == png["options"] and rec["answer"] == png["answer"]
    run_folder = ask_json("--ecg", str(ECG), "--modality", "image", "--adapter",
                          str(image_adapter.parent), capsys=capsys)       # RUN works too
    assert run_folder["options"] == rec["options"]


def test_the_training_size_matters_and_falls_back_to_the_models(image_adapter, ecg_png,
                                                                tmp_path):
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import read_record

    s = ImageSession(image_adapter, record=ECG)
    assert s.render.size == TRAINED_SIZE and s.render.source.endswith("meta.json")
    assert s.image.size == TRAINED_SIZE[::-1]
    small = tmp_path / "small.png"                     # drawn at the model's input size
    render_image(read_record(ECG), (32, 64)).save(small)
    assert ImageSession(image_adapter, image=small).ask(YES_NO_Q).options != \
        s.ask(YES_NO_Q).options
    alone = shutil.copytree(image_adapter, tmp_path / "adapter")   # no run config beside it
    settings = render_settings(alone)
    assert settings.size == (32, 64) and "model.image_size" in settings.source


def test_templates_open_questions_and_not_sure(image_adapter, ecg_png):
    from ecgqa.synth.ecg import RHYTHMS

    s = ImageSession(image_adapter, image=ecg_png, threshold=0.0)
    t = s.ask("What kind of rhythm does this ECG show?")
    assert t.kind == "template" and {o.text for o in t.options} == set(RHYTHMS)
    assert abs(sum(o.prob for o in t.options) - 1) < 1e-5 and t.answer == t.options[0].text
    s.threshold = min(1.0, t.confidence + 1e-3)
    assert s.ask("What kind of rhythm does this ECG show?").answer == NOT_SURE
    out = io.StringIO()
    assert "I can only answer" in s.ask("Describe the T waves.", stream=out).answer
    s.generate_open = True
    a = s.ask("Describe the T waves.", stream=out)
    assert a.kind == "open" and a.options == [] and a.confidence is None
    assert out.getvalue().strip() == a.answer
    near = s.ask("What rhythm is this?")
    assert near.asked_as == "what kind of rhythm does this ecg show?"
    assert {o.text for o in near.options} == set(RHYTHMS)


def test_one_shot_text_ends_with_the_disclaimer(image_adapter, ecg_png, capsys):
    assert main(["chat", "--image", str(ecg_png), "--adapter", str(image_adapter),
                 "--question", YES_NO_Q]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and out.strip().splitlines()[-1] == DISCLAIMER


def test_the_repl_says_what_images_cannot_do(image_adapter, ecg_png, tmp_path, monkeypatch):
    lines = iter(["/leads I,II", YES_NO_Q, "Describe the T waves.", "/summary",
                  f"/plot {tmp_path / 'seen.png'}", "Do both ECGs show sinus rhythm?", "/help",
                  "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    s = ImageSession(image_adapter, record=ECG)
    out = io.StringIO()
    assert repl(s, out) == 0
    text = out.getvalue()
    assert "error: leads can be chosen on the signal only" in text
    assert "answer: " in text and text.count(DISCLAIMER) >= 3         # banner + 2 answers
    assert "drawn as the adapter's training images: 96x48 px" in text
    assert "error: this question compares two ECGs" in text and "--modality signal" in text
    from PIL import Image

    with Image.open(tmp_path / "seen.png") as seen:
        assert seen.convert("RGB").tobytes() == s.image.tobytes()
    lines = iter(["/plot", "/leads all", "/quit"])
    out = io.StringIO()
    assert repl(ImageSession(image_adapter, image=ecg_png), out) == 0
    assert "error: the ECG is an image already" in out.getvalue()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("argv, message", [
    (["--image", "{png}", "--adapter", "heldout"], "reads signals"),
    (["--image", "{png}", "--adapter", "{signal}"], "signal adapter"),
    (["--ecg", "{ecg}", "--modality", "image", "--adapter", "{signal}"], "signal adapter"),
    (["--ecg", "{ecg}", "--modality", "image", "--adapter", "heldout"], "needs --adapter DIR"),
    (["--ecg", "{ecg}", "--adapter", "{image}"], "--modality image"),
    (["--image", "{png}", "--modality", "signal", "--adapter", "{image}"], "--modality image"),
    (["--image", "{png}", "--ecg", "{ecg}", "--adapter", "{image}"], "not both"),
    (["--adapter", "{image}"], "give an ECG"),
    (["--image", "{png}", "--image", "{png}", "--adapter", "{image}"], "reads one ECG"),
    (["--ecg", "{ecg}", "--ecg", "{ecg}", "--modality", "image", "--adapter", "{image}"],
     "reads one ECG"),
    (["--ecg", "{ecg}", "--modality", "image", "--adapter", "{image}", "--leads", "I,II"],
     "--leads"),
    (["--image", "{png}", "--adapter", "{image}", "--shots", "{tmp}/s.json"], "--shots"),
    (["--image", "{png}", "--adapter", "{image}", "--question",
      "Do both ECGs show sinus rhythm?"], "compares two ECGs"),
    (["--image", "{png}", "--adapter", "{tmp}"], "not a saved adapter"),
    (["--image", "{tmp}/missing.png", "--adapter", "{image}"], "no such file"),
    (["--image", "{tmp}", "--adapter", "{image}"], "not a file"),
    (["--image", "{tmp}/garbage.png", "--adapter", "{image}"], "not a readable image"),
    (["--image", "{tmp}/truncated.png", "--adapter", "{image}"], "not a readable image"),
    (["--image", "{tmp}/text.jpg", "--adapter", "{image}"], "not a readable image"),
    (["--image", "{tmp}/tiny.png", "--adapter", "{image}"], "too small"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, image_adapter, tiny_adapter,
                                             ecg_png, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (tmp_path / "truncated.png").write_bytes(ecg_png.read_bytes()[: ecg_png.stat().st_size // 2])
    (tmp_path / "text.jpg").write_text("not an image\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    subst = {"{png}": str(ecg_png), "{ecg}": str(ECG), "{signal}": str(tiny_adapter),
             "{image}": str(image_adapter), "{tmp}": str(tmp_path)}
    for key, value in subst.items():
        argv = [a.replace(key, value) for a in argv]
    if "--question" not in argv:
        argv += ["--question", YES_NO_Q]
    assert main(["chat", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and message in err, err


def test_the_library_refuses_the_wrong_adapter_kind(image_adapter, tiny_adapter):
    from ecgqa.chat import Session

    with pytest.raises(ChatError, match="LoRA image adapter"):
        Session([ECG], image_adapter)
    with pytest.raises(ChatError, match="signal adapter"):
        ImageSession(tiny_adapter, record=ECG)
    with pytest.raises(ChatError, match="one ECG"):
        ImageSession(image_adapter)


# --------------------------------------------------------------------------- shipped


def test_the_shipped_image_adapter_answers_out_of_the_box_and_reads_the_image(capsys):
    """`--image` / `--modality image` without --adapter use ecgqa/assets/adapter-image;
    its answer changes when the image does (a blank page is not answered like an ECG)."""
    import torch
    from PIL import Image

    from ecgqa.image_qa.loading import load_image_qa
    from ecgqa.image_qa.model import SHIPPED_IMAGE_ADAPTER
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import read_record

    out = ask_json("--ecg", str(ECG), "--modality", "image", capsys=capsys)
    assert out["modality"] == "image" and out["adapter"] == "default"
    assert abs(sum(o["prob"] for o in out["options"]) - 1) < 1e-5
    model = load_image_qa("image")
    assert model.cfg.image_encoder == "cnn_tokens" and model.cfg.image_encoder_init is None
    assert not model.trainable_parameters()
    h, w = model.cfg.image_size
    ecg = render_image(read_record(ECG), (h, w))
    blank = Image.new("RGB", (w, h), (255, 255, 255))
    with torch.no_grad():
        p = model.score_options([ecg, blank], [YES_NO_Q] * 2, [["yes", "no"]] * 2)
    yes = {o["text"]: o["prob"] for o in out["options"]}["yes"]
    assert abs(float(p[0, 0]) - yes) < 1e-4          # chat drew the record as the bench does
    assert abs(float(p[0, 0]) - float(p[1, 0])) > 1e-3
    assert (SHIPPED_IMAGE_ADAPTER / "training.json").is_file()
