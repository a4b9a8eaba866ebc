"""`ecgqa bench`: a tiny 2-cell suite end to end, resume, pooled episodes, metrics, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgqa.bench.metrics import (
    bootstrap_ci,
    expected_calibration_error,
    macro_f1,
    summarise_cell,
    text_scores,
)
from ecgqa.bench.runner import LeadSubset
from ecgqa.bench.suite import METHODS
from ecgqa.cli import main
from ecgqa.qa.ecgqa import load_ecgqa
from ecgqa.qa.episodes import PooledEpisodeSampler, class_key
from tests.conftest import ECGQA, REAL, ROOT

TINY_SUITE = ROOT / "eval" / "suites" / "tiny.yaml"


def _bench(qa, adapter, out, *extra) -> int:
    return main(["bench", "--suite", str(TINY_SUITE), "--qa", str(qa), "--adapter",
                 str(adapter), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def tiny_run(synth_qa, tiny_adapter, signal_cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    assert _bench(synth_qa, tiny_adapter, out, "--set", f"cache_dir={signal_cache_dir}") == 0
    return out


def _metric_values(m: dict):
    for key, value in m.items():
        if isinstance(value, dict) and "mean" in value:
            yield key, value["mean"]


def test_a_two_cell_suite_writes_every_file_with_metrics_in_range(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    cells = results["cells"]
    assert [(c["k_shot"], c["leads"]) for c in cells] == [(1, "12-lead"), (2, "12-lead")]
    for cell in cells:
        assert cell["skipped"] is None, cell["skipped"]
        # every baseline is there; combined needs held-out classes (the tiny suite asks all)
        assert sorted(cell["methods"]) == sorted(set(METHODS) - {"combined"})
        for name, m in cell["methods"].items():
            assert m["episodes"] == results["suite"]["episodes"]
            values = dict(_metric_values(m))
            assert {"option_accuracy", "macro_f1"} <= set(values)
            if name not in ("majority",):
                assert "ece" in values
            if name in ("adapted", "no_adaptation", "zero_shot_text", "in_context"):
                assert {"exact_match", "bleu", "rouge_l", "meteor"} <= set(values)
            for key, v in values.items():
                assert 0.0 <= v <= 1.0, (cell["id"], name, key, v)
            assert m["seconds_per_episode"] > 0 and m["answers_per_second"] > 0
    assert results["versions"]["torch"] and results["seed"] == 0
    md = (tiny_run / "results.md").read_text()
    assert "| adapted |" in md and "± " in md
    for png in ("accuracy_vs_k.png", "reliability.png"):
        assert (tiny_run / png).stat().st_size > 5000


def test_every_method_answers_the_same_episodes_and_queries(tiny_run):
    cell = json.loads(next((tiny_run / "cells").glob("*1shot*.json")).read_text())
    truths = {name: [[q["truth"] for q in e["queries"]] for e in eps]
              for name, eps in cell["methods"].items()}
    first = next(iter(truths.values()))
    assert all(t == first for t in truths.values())
    for e in cell["methods"]["adapted"]:
        for q in e["queries"]:
            assert abs(sum(q["probs"]) - 1) < 1e-4 and q["pred"] in q["options"]
            assert q["correct"] == (q["pred"] == q["truth"])


def test_an_interrupted_run_resumes_from_finished_cells(tiny_run, synth_qa, tiny_adapter,
                                                        signal_cache_dir, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(tiny_run, out)
    kept = next((out / "cells").glob("*2shot*.json"))
    before = kept.stat().st_mtime_ns
    next((out / "cells").glob("*1shot*.json")).unlink()        # "killed" during cell 1
    assert _bench(synth_qa, tiny_adapter, out, "--set", f"cache_dir={signal_cache_dir}") == 0
    assert kept.stat().st_mtime_ns == before                    # not recomputed
    again = json.loads((out / "results.json").read_text())["cells"]
    first = json.loads((tiny_run / "results.json").read_text())["cells"]
    for a, b in zip(again, first):                              # the same episodes, answers
        assert a["methods"]["protonet"]["option_accuracy"] == \
            b["methods"]["protonet"]["option_accuracy"]


def test_the_per_query_path_gives_the_fast_paths_answers(tiny_run, synth_qa, tiny_adapter,
                                                         signal_cache_dir, tmp_path):
    """``fast: false`` (every query scored and generated alone, nothing memoised) against the
    default fast path on the same episodes; ``fast`` is no part of the cell fingerprint."""
    out = tmp_path / "per-query"
    assert _bench(synth_qa, tiny_adapter, out, "--set", f"cache_dir={signal_cache_dir}",
                  "--set", "fast=false") == 0
    for fast in sorted((tiny_run / "cells").glob("*.json")):
        a = json.loads(fast.read_text())
        b = json.loads((out / "cells" / fast.name).read_text())
        assert a["fingerprint"] == b["fingerprint"]
        for name, eps in a["methods"].items():
            for ea, eb in zip(eps, b["methods"][name]):
                ta, tb = ea.get("token_accuracy"), eb.get("token_accuracy")
                assert (ta is None) == (tb is None) and (ta is None or abs(ta - tb) < 1e-6)
                for qa, qb in zip(ea["queries"], eb["queries"]):
                    # float32 sums blocked differently where prompts share a call: option
                    # probabilities agree to a few float32 roundings (numerics.py)
                    if qa["probs"] is not None:
                        assert np.allclose(qa["probs"], qb["probs"], rtol=0, atol=1e-5)
                        assert abs(qa["confidence"] - qb["confidence"]) < 1e-5
                    same = {k: v for k, v in qa.items() if k not in ("probs", "confidence")}
                    assert same == {k: v for k, v in qb.items()
                                    if k not in ("probs", "confidence")}, name


def test_measured_values_in_the_prompt_give_the_same_answers_on_both_paths(
        synth_qa, tiny_adapter, signal_cache_dir, tmp_path):
    """An adapter that writes measured values into its prompts: every method runs, and the
    fast path (prompts grouped by shape, prefixes memoised) answers as the per-query path."""
    import yaml

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    cfg = yaml.safe_load((adapter / "config.yaml").read_text())
    assert "{measured}" in cfg["template"]["single"]
    cfg["model"]["measurements"] = True
    (adapter / "config.yaml").write_text(yaml.safe_dump(cfg))
    runs = []
    for fast in ("true", "false"):
        out = tmp_path / f"fast-{fast}"
        assert _bench(synth_qa, adapter, out, "--set", f"cache_dir={signal_cache_dir}",
                      "--set", f"fast={fast}") == 0
        runs.append(sorted((out / "cells").glob("*.json")))
    for a, b in zip(*runs):
        ca, cb = json.loads(a.read_text()), json.loads(b.read_text())
        assert set(ca["methods"]) == set(METHODS) - {"combined"}
        for name, eps in ca["methods"].items():
            for ea, eb in zip(eps, cb["methods"][name]):
                for qa, qb in zip(ea["queries"], eb["queries"]):
                    assert (qa["pred"], qa["text"]) == (qb["pred"], qb["text"]), name
                    if qa["probs"] is not None:
                        assert np.allclose(qa["probs"], qb["probs"], rtol=0, atol=1e-5)


def test_results_of_another_configuration_are_not_mixed_in(tiny_run, synth_qa, tiny_adapter,
                                                           tmp_path, capsys):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(tiny_run, out)
    assert _bench(synth_qa, tiny_adapter, out, "--set", "seed=7") == 2
    err = capsys.readouterr().err.strip()
    assert "another suite configuration" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--set", "methods=[adapted,oracle]"], "unknown oracle"),
    (["--set", "leads=[I,XYZ]"], "XYZ"),
    (["--episodes", "0"], ">= 1"),
    (["--set", "k_shot=[1]", "--set", "leads_at_k=5"], "leads_at_k"),
])
def test_bad_suites_fail_with_one_line_before_writing(synth_qa, tiny_adapter, tmp_path, capsys,
                                                      extra, message):
    out = tmp_path / "never"
    assert _bench(synth_qa, tiny_adapter, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_inputs_fail_with_one_line(synth_qa, tiny_adapter, tmp_path, capsys):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"support_pool": [1, 2], "query_pool": [2, 3]}))
    cases = [(["--splits", str(splits)], "share 1 records"),
             (["--splits", str(tmp_path / "none.json")], "cannot read"),
             (["--qa", str(tmp_path / "nothing")], "nothing"),
             (["--adapter", str(tmp_path)], "not a saved adapter")]
    for extra, message in cases:
        args = ["bench", "--suite", str(TINY_SUITE), "--qa", str(synth_qa), "--adapter",
                str(tiny_adapter), "--out", str(tmp_path / "o"), "--quiet", *extra]
        assert main(args) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (extra, err)


# --------------------------------------------------------------------------- real ECG-QA


def test_the_real_ecgqa_questions_with_shared_records_are_benchmarked(tiny_adapter, tmp_path,
                                                                      signal_cache_dir):
    index = tmp_path / "real_index.csv"
    assert main(["data", "index", str(REAL), "--out", str(index)]) == 0
    out = tmp_path / "real"
    assert main(["bench", "--suite", str(ROOT / "eval" / "suites" / "real-ptbxl.yaml"),
                 "--qa", str(ECGQA / "ptbxl"), "--records", str(index), "--adapter",
                 str(tiny_adapter), "--episodes", "4", "--out", str(out), "--quiet",
                 "--set", f"cache_dir={signal_cache_dir}"]) == 0
    results = json.loads((out / "results.json").read_text())
    done = [c for c in results["cells"] if not c["skipped"]]
    assert done, [c["skipped"] for c in results["cells"]]
    cell = json.loads((out / "cells" / f"{done[0]['id']}.json").read_text())
    pools = json.loads((ROOT / "eval" / "suites" / "real-ptbxl-splits.json").read_text())
    for e in cell["methods"]["adapted"]:
        assert e["queries"] and all(q["truth"] for q in e["queries"])
    assert set(pools["support_pool"]).isdisjoint(pools["query_pool"])
    # the same questions from one QA file (no release folder) give the same episodes
    one = tmp_path / "one-file"
    assert main(["bench", "--suite", str(ROOT / "eval" / "suites" / "real-ptbxl.yaml"),
                 "--qa", str(ECGQA / "ptbxl" / "template" / "train" / "120000.json"),
                 "--records", str(index), "--adapter", str(tiny_adapter), "--episodes", "4",
                 "--out", str(one), "--quiet", "--set", f"cache_dir={signal_cache_dir}"]) == 0
    again = json.loads((one / "cells" / f"{done[0]['id']}.json").read_text())
    assert [[q["truth"] for q in e["queries"]] for e in again["methods"]["majority"]] == \
        [[q["truth"] for q in e["queries"]] for e in cell["methods"]["majority"]]


def test_the_records_index_maps_ptbxl_names_to_ecg_ids(tmp_path):
    from ecgqa.qa.resolve import RecordsIndex

    index = tmp_path / "i.csv"
    assert main(["data", "index", str(REAL), "--out", str(index)]) == 0
    r = RecordsIndex(index)
    assert r.path(1).name == "00001_lr"                 # PTB-XL's own record over HR00001
    assert r.path(6003).name == "HR06003" and r.path(4) is None


# --------------------------------------------------------------------------- episodes


def test_pooled_episodes_take_support_and_queries_from_their_own_pools(synth_qa):
    data = load_ecgqa(synth_qa)
    samples = data.select(question_type="single-verify")
    ids = sorted(data.ecg_ids())
    support_pool, query_pool = set(ids[::2]), set(ids[1::2])
    sampler = PooledEpisodeSampler(samples, 2, 2, 1, support_pool=support_pool,
                                   query_pool=query_pool, question_type="single-verify",
                                   same_question=True, seed=3)
    for i in range(20):
        ep = sampler.episode(i)
        assert ep.records("support") <= support_pool and ep.records("query") <= query_pool
        questions = {class_key(s)[:2] for s in ep.support + ep.query}
        assert len(questions) == 1                      # two answers to one question
        assert len({class_key(s) for s in ep.support}) == 2
        assert {class_key(q) for q in ep.query} <= {class_key(s) for s in ep.support}
    assert sampler.episode(5) == PooledEpisodeSampler(
        samples, 2, 2, 1, support_pool=support_pool, query_pool=query_pool,
        question_type="single-verify", same_question=True, seed=3).episode(5)
    with pytest.raises(ValueError, match="disjoint"):
        PooledEpisodeSampler(samples, 2, 2, 1, support_pool={1, 2}, query_pool={2})


def test_a_lead_subset_removes_the_other_leads(synth_qa):
    from ecgqa.qa.cache import SignalCache
    from ecgqa.qa.resolve import make_resolver

    base = SignalCache(make_resolver(Path(synth_qa) / "records_index.csv"))
    ecg_id = min(load_ecgqa(synth_qa).ecg_ids())
    signal, mask = base.get(ecg_id)
    sub_signal, sub_mask = LeadSubset(base, ("I", "V1")).get(ecg_id)
    assert sub_mask.tolist() == [i in (0, 6) for i in range(12)]
    assert np.array_equal(sub_signal[[0, 6]], signal[[0, 6]])
    assert not sub_signal[[1, 2, 3, 4, 5, 7, 8, 9, 10, 11]].any() and signal[1].any()


# --------------------------------------------------------------------------- metrics


def test_ece_macro_f1_and_bootstrap_by_hand():
    # bins: 0.9 (two queries, one right) and 0.6 (right): (2 * 0.4 + 1 * 0.4) / 3
    assert expected_calibration_error([0.9, 0.9, 0.6], [True, False, True]) == \
        pytest.approx(0.4)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    # class a: P = 1/2, R = 1 -> F1 2/3; class b: F1 0 -> macro 1/3
    assert macro_f1([("a",), ("b",)], [("a",), ("a",)]) == pytest.approx(1 / 3)
    value, half = bootstrap_ci([[1, 0], [1, 1], [0, 0]], lambda x: sum(x) / len(x))
    assert value == pytest.approx(0.5) and 0 < half <= 0.5
    assert math.isnan(bootstrap_ci([[1, 0]], lambda x: sum(x) / len(x))[1])


def test_macro_f1_equals_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = int(rng.integers(1, 12)), int(rng.integers(1, 5))
        truths = [(str(x),) for x in rng.integers(0, k, n)]
        preds = [(str(x),) for x in rng.integers(0, k, n)]
        labels = [str(x) for x in sorted({*truths, *preds})]
        want = f1_score([str(t) for t in truths], [str(p) for p in preds], labels=labels,
                        average="macro", zero_division=0)
        assert macro_f1(truths, preds) == pytest.approx(want, abs=1e-12)


def test_text_metrics_are_one_for_a_perfect_answer_and_zero_for_a_disjoint_one():
    same = text_scores("sinus rhythm", "sinus rhythm")
    assert same["bleu"] == pytest.approx(1.0) and same["rouge_l"] == pytest.approx(1.0)
    assert same["meteor"] > 0.9
    other = text_scores("no", "yes")
    assert other == {"bleu": 0.0, "rouge_l": 0.0, "meteor": 0.0}
    assert 0 < text_scores("sinus bradycardia", "sinus rhythm")["rouge_l"] < 1


def test_summarise_cell_reports_means_and_intervals():
    def q(correct, conf):
        return {"truth": ["yes"], "pred": ["yes"] if correct else ["no"], "correct": correct,
                "confidence": conf, "exact_match": correct, "text": "yes" if correct else "no",
                "text_scores": {"bleu": float(correct), "rouge_l": float(correct),
                                "meteor": float(correct)}}
    episodes = [{"queries": [q(True, 0.8), q(False, 0.7)], "seconds": 1.0},
                {"queries": [q(True, 0.9), q(True, 0.6)], "seconds": 3.0}]
    m = summarise_cell(episodes)
    assert m["option_accuracy"]["mean"] == pytest.approx(0.75)
    assert m["exact_match"]["mean"] == pytest.approx(0.75)
    assert m["seconds_per_episode"] == pytest.approx(2.0)
    assert m["answers_per_second"] == pytest.approx(1.0)
    assert m["ece"]["mean"] >= 0 and len(m["reliability"]) == 10


@pytest.mark.parametrize("suite", sorted((ROOT / "eval" / "suites").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_suite_loads_and_validates(suite):
    from ecgqa.bench.suite import SuiteConfig, cells, validate
    from ecgqa.config import load_config

    cfg = load_config(SuiteConfig, suite)
    validate(cfg)
    assert cells(cfg, cfg.question_types or ["single-verify"])
    if cfg.splits_file:
        assert (suite.parent / cfg.splits_file).is_file()


def test_held_out_classes_follow_the_adapters_split_else_every_question_type(
        synth_qa, tiny_adapter, tmp_path):
    """A suite of one question type must not split classes over that type alone: the
    held-out attributes would differ from meta-training's and meta-trained classes be
    asked. The adapter's classes.json wins; without one the split is over every type."""
    from ecgqa.bench.runner import held_out_classes, prepare_data
    from ecgqa.bench.suite import SuiteConfig
    from ecgqa.config import load_config
    from ecgqa.meta.adapter import save_class_split
    from ecgqa.meta.data import load_available
    from ecgqa.qa.episodes import class_key, class_units, split_classes

    cfg = load_config(SuiteConfig, TINY_SUITE, [f"qa={synth_qa}", "classes=heldout"])
    _, _, every = load_available(str(synth_qa), None, "template", [])
    overall = split_classes(every, test_fraction=0.3, seed=0)
    # without classes.json: the split over every question type, the meta-training default
    assert held_out_classes(cfg, every, tiny_adapter) == overall.meta_test
    for qt in sorted({s.question_type for s in every}):
        alone = split_classes([s for s in every if s.question_type == qt], test_fraction=0.3,
                              seed=0)
        if alone.meta_test & overall.meta_train:
            break
    else:
        pytest.fail("no question type whose own split asks meta-trained classes")
    one_type = load_config(SuiteConfig, TINY_SUITE, [f"qa={synth_qa}", "classes=heldout",
                                                     f"question_types=[{qt}]"])
    data = prepare_data(one_type, tiny_adapter)
    assert data.classes and not data.classes & overall.meta_train
    # with classes.json (another seed): its held-out units, never its meta-train classes
    other = split_classes(every, test_fraction=0.3, seed=7)
    assert other.test_units != overall.test_units
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    save_class_split(other, {"split_seed": 7}, adapter)
    asked = held_out_classes(cfg, every, adapter)
    assert asked == other.meta_test
    assert all(class_units(k, "attribute") <= other.test_units for k in asked)
    assert not asked & other.meta_train and {class_key(s) for s in every} - asked


# --------------------------------------------------------------------------- real PTB-XL


def test_the_ptbxl_suite_builds_its_questions_and_keeps_fold_9_for_queries(
        tiny_adapter, tmp_path, signal_cache_dir):
    """eval/suites/ptbxl.yaml on 60 shared PTB-XL records (folds 8 and 9): the QA folder is
    built from the label table, support records come from train folds, queries from fold 9."""
    import csv

    source = ROOT.parent / "shared" / "data" / "ptbxl-zscore-250hz" / "labels.csv"
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r["strat_fold"] == "8"][:35] + \
        [r for r in rows if r["strat_fold"] == "9"][:25]
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str(source.parent / r["path"])})
    fold = {int(r["ecg_id"]): int(r["strat_fold"]) for r in rows}
    out, qa = tmp_path / "bench", tmp_path / "qa"
    assert main(["bench", "--suite", str(ROOT / "eval" / "suites" / "ptbxl.yaml"),
                 "--qa", str(qa), "--adapter", str(tiny_adapter), "--episodes", "3",
                 "--out", str(out), "--quiet", "--set", f"labels={table}",
                 "--set", "classes=all", "--set", "k_shot=[1]",
                 "--set", "question_types=[single-verify]",
                 "--set", f"cache_dir={signal_cache_dir}"]) == 0
    assert (qa / "labels.jsonl").is_file()
    results = json.loads((out / "results.json").read_text())
    done = [c for c in results["cells"] if not c["skipped"]]
    assert done
    cell = json.loads((out / "cells" / f"{done[0]['id']}.json").read_text())
    for e in cell["methods"]["adapted"]:
        assert all(fold[q["ecg_ids"][0]] == 9 for q in e["queries"])
    train = {int(line.split("\t")[1]) for line in
             (qa / "train_ecgs.tsv").read_text().splitlines()}      # the support pool
    assert train and all(fold[i] == 8 for i in train)


def test_the_combined_method_fits_on_classes_the_cell_does_not_ask(synth_qa, tiny_adapter,
                                                                    signal_cache_dir, tmp_path):
    """Its weights come from calibration episodes whose queries ask none of the cell's
    classes; its answers are the two methods' scores weighed by them."""
    from ecgqa.bench import combine as C

    out = tmp_path / "combined"
    assert _bench(synth_qa, tiny_adapter, out, "--set", f"cache_dir={signal_cache_dir}",
                  "--set", "classes=heldout", "--set", "k_shot=[1]",
                  "--set", "methods=[adapted,protonet,combined]",
                  "--set", "calibration_episodes=4") == 0
    cell = json.loads(next((out / "cells").glob("*.json")).read_text())
    assert cell["skipped"] is None, cell["skipped"]
    fitted = cell["combined"]
    w = C.Weights(**{k: fitted[k] for k in ("llm", "proto", "scale", "nll", "episodes",
                                           "queries")})
    assert w.episodes == 4 and w.queries == len(fitted["calibration_sample_ids"]) > 0
    samples = {s.sample_id: s for s in load_ecgqa(synth_qa).samples}
    asked = {class_key(samples[q["sample_id"]]) for e in cell["methods"]["adapted"]
             for q in e["queries"]}
    fitted_on = {class_key(samples[i]) for i in fitted["calibration_sample_ids"]}
    assert asked and fitted_on and not asked & fitted_on
    for a, b, c in zip(cell["methods"]["adapted"], cell["methods"]["protonet"],
                       cell["methods"]["combined"]):
        for qa, qb, qc in zip(a["queries"], b["queries"], c["queries"]):
            again = C.answer(qa, qb, w)
            assert qc["probs"] == again["probs"] and qc["pred"] == again["pred"]
            assert qc["truth"] == qa["truth"] and qc["exact_match"] is None
    assert "| combined |" in (out / "results.md").read_text()


def test_combined_without_its_parts_or_held_out_classes_is_refused(synth_qa, tiny_adapter,
                                                                  tmp_path, capsys):
    for extra, message in ((["--set", "methods=[adapted,combined]"], "list protonet too"),
                           (["--set", "methods=[adapted,protonet,combined]"],
                            "needs classes: heldout")):
        assert _bench(synth_qa, tiny_adapter, tmp_path / "no", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "no").exists()
