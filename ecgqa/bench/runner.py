"""Run a benchmark suite: every cell, every method, the same episodes; resumable by cell.

The suite's ``modality`` picks what the model reads: ``signal`` (a meta-trained adapter,
:mod:`ecgqa.bench.methods`) or ``image`` (a LoRA adapter reading the query ECGs rendered
as images, :mod:`ecgqa.bench.image`). Data, pools and episodes are the same for both.

Layout of ``OUT``::

    cells/<cell id>.json   one finished cell: per method, per episode, per query answers
    results.json           every cell's metrics (with 95% CIs), config, versions, seed
    results.md             tables a person reads
    *.png                  accuracy vs K-shot, lead-subset ablation, reliability diagram

A cell file is written atomically when the cell finishes, so an interrupted run resumes
from the finished cells; a cell is reused only if its config fingerprint matches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecgqa.bench import blocks as B
from ecgqa.bench import combine as C
from ecgqa.bench import image as I
from ecgqa.bench import methods as M
from ecgqa.bench.metrics import meteor_uses_synonyms, summarise_cell, text_scores
from ecgqa.bench.suite import Cell, SuiteConfig, cells, fingerprint, resolve
from ecgqa.config import ConfigError
from ecgqa.errors import EcgqaError
from ecgqa.records.leads import STANDARD_LEADS, parse_leads


class BenchError(EcgqaError):
    """The suite cannot run on this data (one-line message)."""


class LeadSubset:
    """A view of a signal source with every lead outside ``leads`` removed (zeroed and
    masked as not recorded), as if only those leads had been recorded."""

    def __init__(self, base, leads: tuple[str, ...]):
        self.base = base
        self.keep = np.array([name in leads for name in STANDARD_LEADS])

    def get(self, ecg_id: int):
        signal, mask = self.base.get(ecg_id)
        return signal * self.keep[:, None].astype(signal.dtype), mask & self.keep


@dataclass
class Prepared:
    samples: list
    vocab: object
    classes: object
    support_pool: set[int]
    query_pool: set[int]
    resolver: object
    types: list[str]
    calibration: frozenset | None = None   # classes the cells do not ask (combined fits on)


def prepare_data(cfg: SuiteConfig, adapter: Path | None = None) -> Prepared:
    """Load the QA data, its records, the held-out classes and the two record pools.

    With ``classes: heldout`` the classes asked are those the adapter's meta-training held
    out: from its ``classes.json`` when it has one (a signal adapter), else the split of
    the suite's parameters over the samples of *every* question type, as meta-training
    makes it by default (a split over the suite's question types alone would hold out
    other attributes and could ask meta-trained classes).
    """
    from ecgqa.meta.data import DataConfig, MetaDataError, ensure_data, load_available
    from ecgqa.qa.ecgqa import QUESTION_TYPES
    from ecgqa.qa.episodes import class_key

    ensure_data(DataConfig(qa=cfg.qa, synth_n_ecgs=cfg.synth_n_ecgs,
                           synth_seed=cfg.synth_seed, labels=cfg.labels))
    try:
        data, resolver, every = load_available(cfg.qa, cfg.records, cfg.version, [])
    except MetaDataError as err:
        raise BenchError(str(err)) from None
    wanted = set(cfg.question_types)
    samples = [s for s in every if not wanted or s.question_type in wanted]
    if not samples:
        raise BenchError(f"{cfg.qa}: no samples of question type(s) {', '.join(sorted(wanted))} "
                         "with their ECGs available")
    classes = held_out_classes(cfg, every, adapter) if cfg.classes == "heldout" else None
    calibration = None if classes is None else frozenset(
        {class_key(s) for s in samples} - classes)
    support, query = _pools(cfg, samples)
    types = cfg.question_types or [t for t in QUESTION_TYPES
                                   if any(s.question_type == t for s in samples)]
    return Prepared(samples, data.vocab, classes, support, query, resolver, types, calibration)


def held_out_classes(cfg: SuiteConfig, samples, adapter: Path | None) -> frozenset:
    """The classes (``class_key``) of ``samples`` that the adapter never meta-trained on."""
    from ecgqa.meta.adapter import load_class_split
    from ecgqa.qa.episodes import class_key, class_units, split_classes

    saved = load_class_split(adapter) if adapter is not None and cfg.modality == "signal" \
        else None
    if saved is None:
        return split_classes(samples, test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                             by=cfg.holdout_by).meta_test
    keys = {class_key(s) for s in samples}
    return frozenset(k for k in keys if class_units(k, saved["by"]) <= saved["test_units"]
                     and k not in saved["meta_train"])


def _pools(cfg: SuiteConfig, samples) -> tuple[set[int], set[int]]:
    if cfg.splits_file:
        try:
            spec = json.loads(Path(cfg.splits_file).read_text())
            support = {int(i) for i in spec["support_pool"]}
            query = {int(i) for i in spec["query_pool"]}
        except OSError as err:
            raise BenchError(f"{cfg.splits_file}: cannot read ({err.strerror})") from None
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"{cfg.splits_file}: expected JSON {{\"support_pool\": [ecg_id...], "
                             "\"query_pool\": [ecg_id...]}") from None
    else:
        support = {i for s in samples if s.split in cfg.support_splits for i in s.ecg_ids}
        query = {i for s in samples if s.split in cfg.query_splits for i in s.ecg_ids}
    if support & query:
        raise BenchError(f"support and query pools share {len(support & query)} records "
                         f"(e.g. ecg_id {min(support & query)}); make them disjoint")
    return support, query


def run_suite(cfg: SuiteConfig, out: str | os.PathLike, progress: bool = True) -> dict:
    """Run (or resume) every cell and write ``results.json``, ``results.md`` and plots.

    Returns:
        The results dictionary written to ``results.json``.
    """
    cfg = resolve(cfg)
    out = Path(out)
    folder = check_adapter(cfg.adapter, cfg.modality)       # before any data is touched
    data = prepare_data(cfg, folder)
    grid = cells(cfg, data.types)
    done = {c.id: _load_cell(out / "cells" / f"{c.id}.json", fingerprint(cfg, c),
                             cfg.modality) for c in grid}
    todo = [c for c in grid if done[c.id] is None]
    setup = _image_setup if cfg.modality == "image" else _signal_setup
    info, contexts = setup(cfg, folder, data, load=bool(todo))   # the model loads only
    if todo:                                                     # when a cell must run
        (out / "cells").mkdir(parents=True, exist_ok=True)
    bar = _progress(len(grid) * cfg.episodes, progress)
    bar.update((len(grid) - len(todo)) * cfg.episodes)
    for cell in todo:
        done[cell.id] = run_cell(cfg, cell, data, contexts(cell), bar)
        _write_json(out / "cells" / f"{cell.id}.json", done[cell.id])
    bar.close()
    results = collect(cfg, grid, done, info)
    from ecgqa.bench.report import write_report

    write_report(results, out)
    return results


def check_adapter(source: str, modality: str) -> Path:
    """The adapter folder, checked against the modality (one-line errors).

    A signal adapter (train-meta) holds ``config.yaml`` + ``meta.yaml``; an image adapter
    (train-lora's ``OUT/adapter``) ``config.yaml`` + ``adapter_config.json``.
    """
    from ecgqa.image_qa.model import IMAGE_ADAPTER_NAMES, shipped_image_adapter
    from ecgqa.meta.adapter import SHIPPED_ADAPTERS

    if modality == "image" and str(source) in {*SHIPPED_ADAPTERS, *IMAGE_ADAPTER_NAMES}:
        # the shipped image adapter (trained on every class: the results count the classes
        # asked that it trained on)
        return shipped_image_adapter(BenchError)
    if str(source) in SHIPPED_ADAPTERS:
        return SHIPPED_ADAPTERS[str(source)]
    if str(source) in IMAGE_ADAPTER_NAMES:
        raise BenchError(f"adapter {source!r} is the shipped image adapter; run it with "
                         "--modality image")
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such adapter folder")
    kind = adapter_modality(folder)
    if kind is None:
        hint = (f"; did you mean {folder / 'adapter'}?"
                if adapter_modality(folder / "adapter") else "")
        raise BenchError(f"{folder}: not a saved adapter (signal: config.yaml + meta.yaml "
                         "from train-meta; image: config.yaml + adapter_config.json from "
                         f"train-lora){hint}")
    if kind != modality:
        writer = "train-meta" if kind == "signal" else "train-lora"
        raise BenchError(f"{folder} is a {kind} adapter (written by {writer}), not a "
                         f"{modality} one; run it with --modality {kind}")
    return folder


def adapter_modality(folder: Path) -> str | None:
    """``signal``, ``image`` or None (not an adapter folder)."""
    if not (folder / "config.yaml").is_file():
        return None
    if (folder / "meta.yaml").is_file():
        return "signal"
    if (folder / "adapter_config.json").is_file():
        return "image"
    return None


def _signal_setup(cfg: SuiteConfig, folder: Path, data: Prepared, load: bool):
    """The adapter's recipe for results.json, and ``cell -> Context`` (model loaded when
    ``load``)."""
    from ecgqa.meta.adapter import load_adapter, load_meta_config
    from ecgqa.models.kv import PrefixMemo

    meta = load_meta_config(folder)
    info = {"adapter_meta": asdict(meta)}
    if not load:
        return info, None
    model, algo, meta = load_adapter(folder)
    if cfg.max_new_tokens is not None:
        model.cfg.max_new_tokens = cfg.max_new_tokens
    base = model.signal_cache(data.resolver, cfg.cache_dir)
    # shared by the cells (fast path): one signal view per lead subset, so the encoder
    # features cached on it serve every cell of those leads; the support-free methods'
    # answers; the prompts' prefix key/values
    subsets: dict[tuple, LeadSubset] = {}
    memo: dict = {}
    prefixes = PrefixMemo() if cfg.fast else None

    def contexts(cell: Cell) -> M.Context:
        leads = tuple(parse_leads(cell.leads))
        signals = subsets.setdefault(leads, LeadSubset(base, leads)) if cfg.fast \
            else LeadSubset(base, leads)
        return M.Context(model, algo, signals,
                         meta.eval_steps if cfg.test_steps is None else cfg.test_steps,
                         meta.prefix_cache, cfg.generate, data.vocab, _context_length(model),
                         cfg.options, fast=cfg.fast, leads=leads, memo=memo,
                         prefixes=prefixes, inner_vocab=meta.inner_vocab)

    return info, contexts


def _image_setup(cfg: SuiteConfig, folder: Path, data: Prepared, load: bool):
    """The adapter's config, render settings and training-data check for results.json, and
    ``cell -> ImageContext`` (model loaded when ``load``)."""
    try:
        info = {"image_adapter": I.adapter_info(folder, data)}
    except I.TrainingOverlap as err:
        raise BenchError(str(err)) from None
    if not load:
        return info, None
    model = I.load_model(cfg, folder)
    return info, I.contexts(cfg, data, model, tuple(info["image_adapter"]["render"]["size"]))


def run_cell(cfg: SuiteConfig, cell: Cell, data: Prepared, ctx, bar) -> dict:
    """Every method on the cell's episodes; a cell the data cannot fill is marked skipped."""
    record = {"cell": asdict(cell), "fingerprint": fingerprint(cfg, cell),
              "modality": cfg.modality, "skipped": None, "methods": {m: [] for m in cfg.methods},
              "prepare_seconds": 0.0}
    try:
        sampler = _sampler(cfg, cell, data, data.classes, cfg.seed)
    except ValueError as err:
        record["skipped"] = str(err)
        bar.update(cfg.episodes)
        return record
    episodes = [sampler.episode(i) for i in range(cfg.episodes)]
    names = [m for m in cfg.methods if m != "combined"]
    weights = None
    if "combined" in cfg.methods:
        bar.set_postfix_str(f"combined: {cfg.calibration_episodes} calibration episodes")
        try:
            weights, fitted_on = _calibrate(cfg, cell, data, ctx)
            record["combined"] = {**weights.to_dict(), "calibration_sample_ids": fitted_on}
        except ValueError as err:               # no calibration episodes for this cell
            record["combined"] = {"skipped": str(err)}
            del record["methods"]["combined"]
        bar.set_postfix_str("")
    done = _run_methods(cfg, ctx, episodes, names, record, bar)
    if weights is not None:
        done["combined"] = {
            i: {"index": i, "seconds": sum(done[p][i]["seconds"] for p in C.PARTS),
                "queries": [C.answer(a, b, weights) for a, b in
                            zip(done["adapted"][i]["queries"], done["protonet"][i]["queries"])]}
            for i in range(len(episodes))}
    record["methods"] = {name: [done[name][i] for i in range(len(episodes))]
                         for name in record["methods"]}
    record["peak_rss_gb"] = _rss_gb()
    return record


def _sampler(cfg: SuiteConfig, cell: Cell, data: Prepared, classes, seed: int):
    from ecgqa.bench.suite import CLASS_KEYS
    from ecgqa.qa.episodes import PooledEpisodeSampler

    return PooledEpisodeSampler(
        data.samples, cell.n_way, cell.k_shot, cfg.q_query, support_pool=data.support_pool,
        query_pool=data.query_pool, question_type=cell.question_type, classes=classes,
        key=CLASS_KEYS[cfg.class_by], same_question=cfg.ways == "answers", seed=seed)


CALIBRATION_SEED = 104_729
"""Added to the suite's seed for the combined method's calibration episodes."""


def _calibrate(cfg: SuiteConfig, cell: Cell, data: Prepared, ctx
               ) -> tuple[C.Weights, list[int]]:
    """The combined method's weights for ``cell``: adapted and protonet (no generation) on
    ``calibration_episodes`` episodes of the cell's shape from classes it does not ask;
    and the sample ids of the calibration queries.

    Raises:
        ValueError: the calibration classes cannot fill such an episode.
    """
    sampler = _sampler(cfg, cell, data, data.calibration, cfg.seed + CALIBRATION_SEED)
    episodes = [sampler.episode(i) for i in range(cfg.calibration_episodes)]
    quiet = dataclasses.replace(ctx, generate=False)
    done = _run_methods(cfg, quiet, episodes, list(C.PARTS), {"prepare_seconds": 0.0}, None)
    pick = [[q for i in range(len(episodes)) for q in done[p][i]["queries"]] for p in C.PARTS]
    return C.fit(*pick, episodes=len(episodes)), [q["sample_id"] for q in pick[0]]


def _run_methods(cfg: SuiteConfig, ctx, episodes, names, record: dict, bar) -> dict:
    """``{method: {episode index: its record}}`` of ``names`` on ``episodes``."""
    fast = getattr(ctx, "fast", False)        # signal modality: blocks of one shape
    blocks = B.episode_blocks(ctx, episodes) if fast else [[i] for i in range(len(episodes))]
    run = I.RUN if cfg.modality == "image" else M.RUN
    done: dict[str, dict[int, dict]] = {name: {} for name in names}
    for block in blocks:
        eps = [episodes[i] for i in block]
        start = time.perf_counter()
        for ep in eps:
            ctx.prepare(ep)                     # inputs shared by the methods (images)
        record["prepare_seconds"] += time.perf_counter() - start
        for name in names:
            start = time.perf_counter()
            outs = B.run_block(ctx, name, eps) if fast else [run[name](ctx, ep) for ep in eps]
            seconds = (time.perf_counter() - start) / len(eps)
            for i, ep, (queries, extra) in zip(block, eps, outs):
                _annotate(queries, ep)
                done[name][i] = {"index": i, "queries": queries, "seconds": seconds, **extra}
        if bar is not None:
            bar.update(len(block))
    return done


def _annotate(queries: list[dict], ep) -> None:
    """Each query's sample id, ECG ids and (for generated answers) text scores."""
    for q, sample in zip(queries, ep.query):
        q["sample_id"], q["ecg_ids"] = sample.sample_id, list(sample.ecg_ids)
        if q["text"] is not None:
            q["text_scores"] = text_scores(q["text"], ", ".join(q["truth"]))


def collect(cfg: SuiteConfig, grid: list[Cell], done: dict, info: dict) -> dict:
    """Metrics of every cell and method, with the config, the adapter (``info``), versions
    and costs."""
    out_cells = []
    for cell in grid:
        rec = done[cell.id]
        entry = {"id": cell.id, **asdict(cell), "skipped": rec["skipped"], "methods": {}}
        if not rec["skipped"]:
            for name, episodes in rec["methods"].items():
                entry["methods"][name] = summarise_cell(episodes, cfg.calibration_bins)
            entry["peak_rss_gb"] = rec.get("peak_rss_gb")
            if "combined" in rec:                  # its fitted weights (ids: in the cell file)
                entry["combined_fit"] = {k: v for k, v in rec["combined"].items()
                                         if k != "calibration_sample_ids"}
            entry["prepare_seconds_per_episode"] = rec.get("prepare_seconds", 0.0) / max(
                1, cfg.episodes)
        out_cells.append(entry)
    return {"suite": asdict(cfg), "modality": cfg.modality, "adapter": cfg.adapter, **info,
            "seed": cfg.seed,
            "versions": _versions(), "meteor_wordnet_synonyms": meteor_uses_synonyms(),
            "peak_rss_gb": max([_rss_gb(), *(c.get("peak_rss_gb") or 0 for c in out_cells)]),
            "cells": out_cells}


def _load_cell(path: Path, want: str, modality: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None                                   # a damaged file: run the cell again
    if rec.get("fingerprint") != want:
        theirs = rec.get("modality", "signal")
        what = f" (modality {theirs}, not {modality})" if theirs != modality else ""
        raise BenchError(f"{path} holds results of another suite configuration{what}; use "
                         "another --out or delete that folder")
    return rec


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _context_length(model) -> int:
    return int(getattr(model.llm.config, "max_position_embeddings", 2048) or 2048)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="bench", unit="episode", disable=not enabled)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _versions() -> dict:
    import torch
    import transformers

    from ecgqa.assets import package_version

    return {"ecgqa": package_version(), "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform()}


__all__ = ["BenchError", "ConfigError", "LeadSubset", "check_adapter", "run_suite"]
