"""`ecgqa bench --modality image`: the tiny suite on a tiny LoRA adapter trained in-process;
the same queries as the signal path; blanked leads; resume, refusals and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgqa.bench.suite import IMAGE_METHODS
from ecgqa.cli import main
from tests.conftest import ROOT

TINY_SUITE = ROOT / "eval" / "suites" / "tiny.yaml"
TINY_LORA = ROOT / "configs" / "lora" / "tiny.yaml"


def _bench(qa, adapter, out, *extra) -> int:
    return main(["bench", "--suite", str(TINY_SUITE), "--qa", str(qa), "--adapter",
                 str(adapter), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="session")
def image_adapter(synth_qa, tmp_path_factory) -> Path:
    """A tiny LoRA adapter (configs/lora/tiny.yaml) trained 2 steps on instruction data of
    the synthetic set's train split, as `ecgqa data instruct` + `ecgqa train-lora` make it."""
    from ecgqa.config import load_config
    from ecgqa.image_qa.instruct import build_instruct
    from ecgqa.image_qa.train import LoraTrainer, TrainLoraConfig, make_accelerator

    root = tmp_path_factory.mktemp("lora")
    build_instruct(root / "instruct", qa=synth_qa, question_types=["single-verify"],
                   max_samples=48, size=(32, 64))
    cfg = load_config(TrainLoraConfig, TINY_LORA, [
        f"data.path={root / 'instruct'}", f"train.out={root / 'run'}", "train.steps=2",
        "train.eval_every=0", "train.save_every=0", "train.progress=false"])
    trainer = LoraTrainer(cfg, make_accelerator(cfg)).setup()
    trainer.train()
    return trainer.finish()


@pytest.fixture(scope="module")
def image_run(synth_qa, image_adapter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-image") / "tiny"
    assert _bench(synth_qa, image_adapter, out, "--modality", "image") == 0
    return out


@pytest.fixture(scope="module")
def signal_run(synth_qa, tiny_adapter, signal_cache_dir, tmp_path_factory) -> Path:
    """The signal path on the same suite (support majority only: the episodes are the same
    whatever the methods)."""
    out = tmp_path_factory.mktemp("bench-signal") / "tiny"
    assert _bench(synth_qa, tiny_adapter, out, "--set", "methods=[majority]", "--set",
                  f"cache_dir={signal_cache_dir}") == 0
    return out


def _cell(run: Path, pattern: str) -> dict:
    return json.loads(next((run / "cells").glob(pattern)).read_text())


def _metric_values(m: dict):
    for key, value in m.items():
        if isinstance(value, dict) and "mean" in value:
            yield key, value["mean"]


def test_an_image_suite_writes_every_file_with_metrics_in_range(image_run, image_adapter):
    results = json.loads((image_run / "results.json").read_text())
    assert results["modality"] == "image" and results["suite"]["modality"] == "image"
    assert results["adapter"] == str(image_adapter)
    info = results["image_adapter"]
    assert info["adapted_on_support"] is False and info["render"]["size"] == [32, 64]
    assert info["training_data_check"]["status"] == "checked"
    assert info["training_data_check"]["train_records"] > 0
    cells = results["cells"]
    assert [(c["k_shot"], c["leads"]) for c in cells] == [(1, "12-lead"), (2, "12-lead")]
    for cell in cells:
        assert cell["skipped"] is None, cell["skipped"]
        assert list(cell["methods"]) == list(IMAGE_METHODS)
        assert cell["prepare_seconds_per_episode"] > 0               # images were rendered
        for name, m in cell["methods"].items():
            assert m["episodes"] == results["suite"]["episodes"]
            values = dict(_metric_values(m))
            assert {"option_accuracy", "macro_f1"} <= set(values)
            if name not in ("majority", "protonet", "linear_probe"):
                assert {"exact_match", "ece", "bleu", "rouge_l", "meteor",
                        "token_accuracy_side_metric"} <= set(values), (name, set(values))
            for key, v in values.items():
                assert 0.0 <= v <= 1.0, (cell["id"], name, key, v)
            assert m["seconds_per_episode"] > 0 and m["answers_per_second"] > 0
    md = (image_run / "results.md").read_text()
    assert "Modality image" in md and "not adapted on the support set" in md
    assert "| lora |" in md and "| lora_disabled |" in md and "Checked: none of the" in md
    assert (image_run / "accuracy_vs_k.png").stat().st_size > 5000


def test_image_and_signal_paths_answer_the_same_queries(image_run, signal_run):
    for pattern in ("*1shot*.json", "*2shot*.json"):
        image, signal = _cell(image_run, pattern), _cell(signal_run, pattern)
        assert image["cell"] == signal["cell"]

        def asked(cell, method):
            return [[(q["sample_id"], q["ecg_ids"], q["truth"]) for q in e["queries"]]
                    for e in cell["methods"][method]]

        queries = asked(signal, "majority")
        assert queries and all(queries)
        for method in IMAGE_METHODS:
            assert asked(image, method) == queries, method
        # the support-majority baseline sees the same support sets: the same answers
        assert [[q["pred"] for q in e["queries"]] for e in image["methods"]["majority"]] == \
            [[q["pred"] for q in e["queries"]] for e in signal["methods"]["majority"]]


def test_image_answers_are_consistent(image_run):
    cell = _cell(image_run, "*1shot*.json")
    for name in ("lora", "lora_disabled"):
        for e in cell["methods"][name]:
            assert 0.0 <= e["token_accuracy"] <= 1.0
            for q in e["queries"]:
                assert abs(sum(q["probs"]) - 1) < 1e-4 and q["pred"] in q["options"]
                assert q["correct"] == (q["pred"] == q["truth"])
                assert q["options"] == [["no"], ["yes"]]     # the synthetic template's
                assert isinstance(q["text"], str)
    lora = [q["probs"] for e in cell["methods"]["lora"] for q in e["queries"]]
    off = [q["probs"] for e in cell["methods"]["lora_disabled"] for q in e["queries"]]
    assert not np.allclose(lora, off)                 # switching LoRA off changes the model


def test_an_interrupted_image_run_resumes_and_other_configs_are_refused(
        image_run, signal_run, synth_qa, image_adapter, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(image_run, out)
    kept = next((out / "cells").glob("*2shot*.json"))
    before = kept.stat().st_mtime_ns
    next((out / "cells").glob("*1shot*.json")).unlink()
    assert _bench(synth_qa, image_adapter, out, "--modality", "image") == 0
    assert kept.stat().st_mtime_ns == before                     # not recomputed
    again = json.loads((out / "cells" / next((image_run / "cells").glob("*1shot*")).name)
                       .read_text())
    first = _cell(image_run, "*1shot*.json")
    # the same model on the same episode in another run: probabilities (<= 1) within a few
    # roundings of each other, 64 u = 3.8e-6 (a different query or model moves them by far more)
    assert again["methods"]["lora"][0]["queries"][0]["probs"] == pytest.approx(
        first["methods"]["lora"][0]["queries"][0]["probs"], abs=64 * 2.0 ** -24)
    capsys.readouterr()
    # a signal folder refuses the image config, and an image folder the signal one
    for folder, args in ((signal_run, [image_adapter, "--modality", "image"]),
                         (image_run, [tiny_adapter, "--set", "methods=[majority]"])):
        other = tmp_path / f"other-{folder.parent.name}"
        shutil.copytree(folder, other)
        assert _bench(synth_qa, args[0], other, *args[1:]) == 2
        err = capsys.readouterr().err.strip()
        assert "another suite configuration (modality" in err and len(err.splitlines()) == 1


def test_modality_and_adapter_mismatches_fail_with_one_line_before_writing(
        synth_qa, image_adapter, tiny_adapter, tmp_path, capsys):
    cases = [(tiny_adapter, ["--modality", "image"], "is a signal adapter"),
             (image_adapter, [], "is a image adapter"),
             (image_adapter, ["--modality", "signal"], "--modality image"),
             ("image", [], "is the shipped image adapter"),
             (tmp_path / "missing", ["--modality", "image"], "no such adapter folder"),
             (image_adapter.parent, ["--modality", "image"], "did you mean"),
             (image_adapter, ["--modality", "image", "--set", "methods=[adapted]"],
              "unknown adapted for modality image"),
             (image_adapter, ["--modality", "pixels"], "invalid choice")]
    for adapter, extra, message in cases:
        out = tmp_path / "never"
        assert _bench(synth_qa, adapter, out, *extra) == 2, (adapter, extra)
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) <= 2, (extra, err)
        assert "Traceback" not in err and not out.exists(), (extra, err)


def test_an_adapter_trained_on_query_records_is_refused(synth_qa, image_adapter, tmp_path,
                                                        capsys):
    out = tmp_path / "never"
    # queries from the train split: the adapter's training records
    assert _bench(synth_qa, image_adapter, out, "--modality", "image", "--set",
                  "query_splits=[train]") == 2
    err = capsys.readouterr().err.strip()
    assert "was trained on" in err and "query" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_the_training_data_check_says_when_it_cannot_check(synth_qa, image_adapter, tmp_path):
    from ecgqa.bench.image import training_data_check
    from ecgqa.qa.resolve import make_resolver

    resolver = make_resolver(synth_qa)
    moved = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(image_adapter, moved)                 # no train-lora config.yaml beside it
    check = training_data_check(moved, resolver, {1, 2, 3})
    assert check["status"] == "unavailable" and "config.yaml" in check["reason"]
    check = training_data_check(image_adapter, resolver, set())
    assert check["status"] == "checked" and check["shared"] == 0


def test_the_training_data_check_counts_the_asked_classes_it_trained_on(synth_qa, image_adapter):
    from ecgqa.bench.image import training_data_check
    from ecgqa.qa.ecgqa import load_ecgqa
    from ecgqa.qa.episodes import class_key
    from ecgqa.qa.resolve import make_resolver

    data = load_ecgqa(synth_qa)
    train_ids = {e["sample_id"] for e in _training_entries(image_adapter)}
    trained = {class_key(s) for s in data.samples if s.split == "train"
               and s.sample_id in train_ids}
    untrained = {class_key(s) for s in data.samples if s.question_type == "single-query"}
    assert trained and untrained and not trained & untrained
    resolver = make_resolver(synth_qa)
    check = training_data_check(image_adapter, resolver, set(), trained | untrained)
    assert check["query_classes"] == len(trained | untrained)
    assert check["query_classes_trained"] == len(trained)
    check = training_data_check(image_adapter, resolver, set(), untrained)
    assert check["query_classes_trained"] == 0


def test_the_asked_classes_are_the_held_out_ones_on_query_records(synth_qa):
    from ecgqa.bench.image import query_classes
    from ecgqa.bench.runner import prepare_data
    from ecgqa.bench.suite import SuiteConfig
    from ecgqa.config import load_config

    held = prepare_data(load_config(SuiteConfig, TINY_SUITE, [f"qa={synth_qa}",
                                                               "classes=heldout"]))
    every = prepare_data(load_config(SuiteConfig, TINY_SUITE, [f"qa={synth_qa}"]))
    asked, all_asked = query_classes(held), query_classes(every)
    assert asked and asked <= held.classes and asked < all_asked


def _training_entries(adapter: Path) -> list[dict]:
    import yaml

    data = Path(yaml.safe_load((adapter.parent / "config.yaml").read_text())["data"]["path"])
    return json.loads((data / "train.json").read_text())


def test_a_lead_subset_blanks_the_other_leads_in_the_image(synth_qa):
    from ecgqa.bench.image import QueryImages, blank_leads
    from ecgqa.image_qa.render import render_image
    from ecgqa.qa.ecgqa import load_ecgqa
    from ecgqa.qa.resolve import make_resolver
    from ecgqa.records.leads import STANDARD_LEADS
    from ecgqa.records.read import read_record

    resolver = make_resolver(synth_qa)
    ecg_id = min(load_ecgqa(synth_qa).ecg_ids())
    record = read_record(resolver.require(ecg_id))
    blanked = blank_leads(record, ("I", "V1"))
    keep = [name in ("I", "V1") for name in record.leads]
    assert blanked.lead_mask.tolist() == [m and k for m, k in zip(record.lead_mask, keep)]
    assert not blanked.signal[~np.array(keep)].any() and record.signal[1].any()
    size = (128, 256)
    full = np.asarray(QueryImages(resolver, size, STANDARD_LEADS).get(ecg_id))
    assert np.array_equal(full, np.asarray(render_image(record, size, None)))   # plain look
    part = np.asarray(QueryImages(resolver, size, ("I", "V1")).get(ecg_id))
    dark = (full.sum(-1) < 200).sum(), (part.sum(-1) < 200).sum()
    assert 0 < dark[1] < dark[0] / 2                       # 2 of 12 leads (+ rhythm) drawn


def test_sensitivity_methods_ask_of_a_blank_page_and_of_another_record(
        image_run, image_adapter, synth_qa):
    from ecgqa.bench.image import blank_image, other_record
    from ecgqa.image_qa.loading import load_image_qa
    from ecgqa.qa.ecgqa import QaSample, load_ecgqa
    from ecgqa.qa.episodes import Episode

    cell = _cell(image_run, "*1shot*.json")
    question = {s.sample_id: s.question for s in load_ecgqa(synth_qa).samples}
    model = load_image_qa(image_adapter).eval()
    blank = blank_image((32, 64))
    for e in cell["methods"]["lora_blank"][:3]:
        for q in e["queries"]:
            want = model.score_options([blank], [question[q["sample_id"]]], [q["options"]])[0]
            np.testing.assert_allclose(q["probs"], want[: len(q["options"])].tolist(),
                                       atol=1e-6)
    # lora_other answers from another record's image: its answers differ from lora's
    lora = [q["probs"] for e in cell["methods"]["lora"] for q in e["queries"]]
    other = [q["probs"] for e in cell["methods"]["lora_other"] for q in e["queries"]]
    assert not np.allclose(lora, other)

    def sample(i, ecg):
        return QaSample(sample_id=i, template_id=1, question_id=1,
                        question_type="single-verify", attribute_type="t", question="q",
                        answer=("yes",), ecg_ids=(ecg,), attribute=("a",), split="test")

    ep = Episode(support=tuple(sample(i, 10 + i) for i in range(4)),
                 query=(sample(9, 99), sample(8, 98)), classes=(), index=3)
    picks = [other_record(ep, i) for i in range(2)]
    assert all(p in {10, 11, 12, 13} for p in picks)
    assert picks == [other_record(ep, i) for i in range(2)]         # deterministic


def test_a_copied_adapter_is_checked_through_its_training_record(image_adapter, synth_qa,
                                                                 tmp_path):
    import yaml

    from ecgqa.bench.image import TrainingOverlap, training_data_check, write_training_record
    from ecgqa.qa.ecgqa import load_ecgqa
    from ecgqa.qa.resolve import make_resolver

    resolver = make_resolver(synth_qa)
    data = Path(yaml.safe_load((image_adapter.parent / "config.yaml").read_text())["data"]["path"])
    train_ids = {i for e in json.loads((data / "train.json").read_text()) for i in e["ecg_id"]}
    every = {i for s in load_ecgqa(synth_qa).samples for i in s.ecg_ids}
    unseen = sorted(every - train_ids)[:20]
    copy = tmp_path / "shipped"
    shutil.copytree(image_adapter, copy)                 # no run config beside it
    assert training_data_check(copy, resolver, unseen)["status"] == "unavailable"
    record = write_training_record(copy, data)
    assert len(record["record_digests"]) == len(train_ids)
    check = training_data_check(copy, resolver, unseen)
    assert check["status"] == "checked" and check["shared"] == 0
    assert check["train_records"] == len(train_ids) and check["query_records"] == len(unseen)
    with pytest.raises(TrainingOverlap, match="same record header"):
        training_data_check(copy, resolver, sorted(train_ids)[:3])


def test_feature_classifiers_read_the_image_encoders_features(image_adapter, synth_qa):
    """protonet on the image path: softmax over minus the squared distances between the
    query's and each answer's mean support features of the adapter's image encoder."""
    from ecgqa.bench.image import ImageContext, QueryImages, image_protonet
    from ecgqa.image_qa.inputs import preprocess
    from ecgqa.image_qa.loading import load_image_qa
    from ecgqa.qa.ecgqa import load_ecgqa
    from ecgqa.qa.episodes import Episode
    from ecgqa.qa.resolve import make_resolver
    from ecgqa.records.leads import parse_leads

    data = load_ecgqa(synth_qa)
    model = load_image_qa(image_adapter).eval()
    images = QueryImages(make_resolver(synth_qa), (32, 64), parse_leads("12-lead"))
    ctx = ImageContext(model, images, data.vocab)
    verify = [s for s in data.samples if s.question_type == "single-verify"]
    tid = verify[0].template_id
    yes = [s for s in verify if s.template_id == tid and s.answer == ("yes",)][:3]
    no = [s for s in verify if s.template_id == tid and s.answer == ("no",)][:3]
    query = [s for s in verify if s.template_id == tid and s not in yes + no][0]
    ep = Episode(support=tuple(yes[:2] + no[:2]), query=(query,), classes=(), index=0)
    out, _ = image_protonet(ctx, ep)

    def pooled(sample):
        with torch.no_grad():
            img = images.get(sample.ecg_ids[0])
            return model.encoder(preprocess([img], [32, 64])).mean(1)[0].double().numpy()

    options = [tuple(o) for o in out[0]["options"]]
    z = pooled(query)
    scores = []
    for o in options:
        members = [pooled(s) for s in ep.support if tuple(sorted(s.answer)) == o]
        scores.append(-((z - np.mean(members, 0)) ** 2).sum() if members else -np.inf)
    want = torch.softmax(torch.tensor(scores), 0).numpy()
    np.testing.assert_allclose(out[0]["probs"], want, atol=1e-4)
    assert out[0]["correct"] == (out[0]["pred"] == sorted(query.answer))
