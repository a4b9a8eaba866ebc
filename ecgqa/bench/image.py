"""The image modality of the benchmark: the same episodes, each query ECG drawn as an image.

Data flow of one query::

    ecg_id --records resolver--> EcgRecord --blank the leads outside the cell's subset-->
    --render_image(size of the adapter's training images, no variation)--> PIL image
    --ImageQaModel: score the candidate answers, generate, teacher-forced token accuracy

- **Images.** The query's record is read as ``ecgqa data instruct`` reads it and drawn with
  :func:`ecgqa.image_qa.render.render_image` at the size of the adapter's training images
  (its instruction data's ``meta.json``, else the model's ``image_size``), in the plain
  printout look: no random variation at test time. With a lead subset the other leads are
  blanked out as not recorded (the paper shows "V1 (not recorded)" and no trace), as the
  signal path zeroes and masks them.
- **Methods.** ``lora``: the LoRA-tuned model; ``lora_disabled``: the same model with its
  LoRA layers switched off (the frozen base LLM reading the same image tokens);
  ``majority``: the support set's most frequent answer. ECG sensitivity: ``lora_blank``
  asks the same questions of a blank page, ``lora_other`` of another patient's ECG (a
  support record of the episode); the drop from ``lora`` says how much the answers read
  the image. ``protonet`` / ``linear_probe``: the signal path's feature classifiers on the
  adapter's image-encoder features of the rendered support and query ECGs (they read the
  support set). The LoRA adapter is NOT adapted
  on the support set: both LLM methods answer each query from its image and question
  alone, choosing among the same candidates as the signal methods
  (:func:`ecgqa.bench.methods.candidates`).
- **Leakage.** :func:`training_data_check` compares the records of the adapter's training
  split with the bench's query pool and refuses to run when they share one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ecgqa.bench.methods import candidates, majority
from ecgqa.errors import EcgqaError
from ecgqa.meta.loop import answer_matches, answer_terms
from ecgqa.qa.episodes import Episode


class TrainingOverlap(EcgqaError):
    """The adapter trained on a record the bench asks about (one-line message)."""


# --------------------------------------------------------------------------- images


def blank_leads(record, leads: tuple[str, ...]):
    """``record`` with every lead outside ``leads`` zeroed and marked not recorded (the
    plot then draws its label with "(not recorded)" and no trace)."""
    keep = np.array([name in leads for name in record.leads])
    if keep.all():
        return record
    return replace(record, signal=record.signal * keep[:, None].astype(record.signal.dtype),
                   lead_mask=record.lead_mask & keep)


class QueryImages:
    """``get(ecg_id) -> PIL image`` of one lead subset: read, blank, render (plain look);
    the latest ``max_items`` images are kept.

    Args:
        resolver: maps an ecg_id to its record path.
        size: ``(height, width)`` of the rendered image.
        leads: the leads drawn; the others are blanked out.
    """

    def __init__(self, resolver, size: tuple[int, int], leads: tuple[str, ...],
                 max_items: int = 256):
        self.resolver, self.size, self.leads = resolver, tuple(size), leads
        self.max_items = max_items
        self._mem: OrderedDict[int, object] = OrderedDict()

    def get(self, ecg_id: int):
        from ecgqa.image_qa.render import render_image
        from ecgqa.records.read import read_record

        ecg_id = int(ecg_id)
        if ecg_id not in self._mem:
            record = blank_leads(read_record(self.resolver.require(ecg_id)), self.leads)
            self._mem[ecg_id] = render_image(record, self.size, None)
            if len(self._mem) > self.max_items:
                self._mem.popitem(last=False)
        self._mem.move_to_end(ecg_id)
        return self._mem[ecg_id]


# --------------------------------------------------------------------------- methods


@dataclass
class ImageContext:
    """What every image method of a cell shares."""

    model: object                  # ImageQaModel
    images: QueryImages            # the cell's lead subset
    vocab: object                  # AnswerVocab: candidates and parsing generated answers
    options: str = "template"      # candidate answers: template or support
    generate: bool = True
    max_new_tokens: int | None = None
    features: dict = None          # ecg_id -> the image encoder's mean-pooled tokens

    def candidates(self, ep: Episode, query) -> list[tuple[str, ...]]:
        """The answers a method chooses among (:func:`ecgqa.bench.methods.candidates`)."""
        return candidates(ep, query, self.vocab, self.options)

    def pooled(self, ecg_id: int) -> np.ndarray:
        """The adapter's image encoder's mean-pooled tokens of the record's image ``(d,)``
        (computed once per record and lead subset)."""
        if self.features is None:
            self.features = {}
        if ecg_id not in self.features:
            from ecgqa.image_qa.inputs import preprocess

            pixels = preprocess([self.images.get(ecg_id)], self.model.cfg.image_size)
            enc = self.model.encoder
            with torch.no_grad():
                tokens = enc(pixels.to(next(enc.parameters()).device))       # (1, n, d)
            self.features[ecg_id] = tokens.float().mean(1)[0].cpu().numpy()
        return self.features[ecg_id]

    def prepare(self, ep: Episode) -> None:
        """Render the episode's query images (timed apart from the methods)."""
        for q in ep.query:
            self.images.get(q.ecg_ids[0])


@torch.no_grad()
def token_accuracy(model, image, question: str, answer) -> float | None:
    """Teacher-forced answer-token accuracy of one question (a side metric); None for a
    Hugging Face multimodal model, whose forward pass is its own."""
    if getattr(model.cfg, "hf_multimodal", None):
        return None
    batch = model.make_batch([image], [[(question, ", ".join(answer))]])
    emb, att, tgt = model.splice(batch, model.image_tokens(batch.pixels))    # (1, T, d)
    hidden = model._body()(inputs_embeds=emb, attention_mask=att,
                           use_cache=False).last_hidden_state             # (1, T, d)
    where = tgt != -100
    pred = model._logits(hidden[where]).argmax(-1)                       # (N,)
    return float((pred == tgt[where]).float().mean())


def blank_image(size: tuple[int, int]):
    """A blank white page of ``(height, width)``."""
    from PIL import Image

    return Image.new("RGB", (int(size[1]), int(size[0])), (255, 255, 255))


def other_record(ep: Episode, i: int) -> int:
    """The ecg_id of another patient's ECG for query ``i``: a support record of the same
    episode (never the query's record: support and query records are disjoint), drawn
    with a seed of the episode and query, so every method and run sees the same one."""
    own = set(ep.query[i].ecg_ids)
    pool = sorted({e for s in ep.support for e in s.ecg_ids} - own)
    rng = np.random.default_rng([ep.index, i])
    return int(pool[int(rng.integers(len(pool)))])


def _answer(ctx: ImageContext, ep: Episode, image_of=None) -> tuple[list[dict], dict]:
    """Score every query's candidates after its image and question, generate, and measure
    the teacher-forced token accuracy; the support set is not looked at. ``image_of(ep,
    i)`` replaces query ``i``'s image (the ECG-sensitivity methods)."""
    options = [ctx.candidates(ep, q) for q in ep.query]
    terms = answer_terms(options, ctx.vocab)
    out, tokens = [], []
    for i, (q, opts) in enumerate(zip(ep.query, options)):
        image = ctx.images.get(q.ecg_ids[0]) if image_of is None else image_of(ep, i)
        probs = ctx.model.score_options([image], [q.question], [[list(o) for o in opts]])
        probs = probs[0, : len(opts)].tolist()
        text = (ctx.model.generate(image, q.question, max_new_tokens=ctx.max_new_tokens)
                if ctx.generate else None)
        truth = tuple(sorted(q.answer))
        pred = opts[int(np.argmax(probs))]
        out.append({"truth": list(truth), "options": [list(o) for o in opts], "probs": probs,
                    "pred": list(pred), "correct": pred == truth,
                    "confidence": float(max(probs)), "text": text,
                    "exact_match": None if text is None else answer_matches(text, truth, terms)})
        tokens.append(token_accuracy(ctx.model, image, q.question, q.answer))
    tokens = [t for t in tokens if t is not None]
    return out, {"token_accuracy": float(np.mean(tokens)) if tokens else None}


def lora(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """The LoRA-tuned image model as trained (not adapted on the support set)."""
    return _answer(ctx, ep)


def lora_disabled(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """The same model with its LoRA layers switched off: the untuned LLM reading the same
    image tokens (the image encoder and projector stay as trained)."""
    with ctx.model.llm.disable_adapter():
        return _answer(ctx, ep)


def lora_blank(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """ECG sensitivity: the LoRA model asked the same questions about a blank page."""
    return _answer(ctx, ep, lambda _ep, _i: blank_image(ctx.images.size))


def lora_other(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """ECG sensitivity: the same questions asked of another patient's ECG image
    (:func:`other_record`); a model that reads the image falls towards chance."""
    return _answer(ctx, ep, lambda e, i: ctx.images.get(other_record(e, i)))


def _image_features(ctx: ImageContext):
    return lambda sample: ctx.pooled(sample.ecg_ids[0])


def image_protonet(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """Nearest answer prototype on the image encoder's features of the support images
    (the signal path's classifier, :func:`ecgqa.bench.methods._classify`)."""
    from ecgqa.bench.methods import _classify, _Prototypes

    return _classify(ctx, ep, _Prototypes, _image_features(ctx))


def image_linear_probe(ctx: ImageContext, ep: Episode) -> tuple[list[dict], dict]:
    """Logistic regression on the image encoder's features of the support images."""
    from ecgqa.bench.methods import _classify, _linear_probe

    return _classify(ctx, ep, _linear_probe, _image_features(ctx))


RUN = {"lora": lora, "lora_disabled": lora_disabled, "lora_blank": lora_blank,
       "lora_other": lora_other, "protonet": image_protonet,
       "linear_probe": image_linear_probe, "majority": majority}


# --------------------------------------------------------------------------- setup


def load_model(cfg, folder: Path):
    """The LoRA model of ``folder`` in eval mode, its generation limit set by the suite."""
    from ecgqa.image_qa.loading import load_image_qa

    model = load_image_qa(folder)
    if cfg.max_new_tokens is not None:
        model.cfg.max_new_tokens = cfg.max_new_tokens
    return model


def contexts(cfg, data, model, size: tuple[int, int]):
    """``cell -> ImageContext``: one context per lead subset, sharing the model."""
    from ecgqa.records.leads import parse_leads

    def make(cell) -> ImageContext:
        images = QueryImages(data.resolver, size, parse_leads(cell.leads))
        return ImageContext(model, images, data.vocab, cfg.options, cfg.generate,
                            cfg.max_new_tokens)

    return make


def query_classes(data) -> set:
    """The classes the bench's queries can have: those of its question types on query-pool
    records, only the held-out ones with ``classes: heldout``."""
    from ecgqa.qa.episodes import class_key

    keys = {class_key(s) for s in data.samples if s.question_type in data.types
            and all(i in data.query_pool for i in s.ecg_ids)}
    return keys & data.classes if data.classes is not None else keys


def adapter_info(folder: Path, data) -> dict:
    """What results.json records about an image adapter: its model config, the render
    settings of the query images, and the training-data check (which raises
    :class:`TrainingOverlap` when the adapter trained on a query-pool record)."""
    from dataclasses import asdict

    from ecgqa.image_qa.model import load_saved_config

    model_cfg, _ = load_saved_config(folder)
    check = training_data_check(folder, data.resolver, data.query_pool, query_classes(data))
    size = check.get("image_size") or list(model_cfg.image_size)
    return {"path": str(folder.resolve()), "model": asdict(model_cfg),
            "render": {"size": size, "variation": None,
                       "lead_subsets": "leads outside the subset blanked (not recorded)"},
            "adapted_on_support": False, "training_data_check": check}


# --------------------------------------------------------------------------- leakage


def training_data_check(folder: Path, resolver, query_pool, query_classes=()) -> dict:
    """Compare the records of the adapter's training split with the bench's query pool,
    and its training questions' classes with the classes the bench asks.

    The adapter folder is train-lora's ``OUT/adapter``; ``OUT/config.yaml`` names the
    instruction data (``data.path``), whose ``meta.json`` says which ECG-QA data and records
    it was built from. The training entries' ecg_ids are resolved to record files there and
    compared with the query pool's record files (so two copies of one dataset compare
    equal, and two different datasets with the same ids do not).

    Classes are ``(template, attribute, answer)`` (:func:`ecgqa.qa.episodes.class_key`). A
    shared class is not refused (the image path is supervised, not meta-learned), but
    reported: on held-out classes it means the adapter was taught what the signal
    adapter must learn from the support set.

    Args:
        query_classes: the classes the bench's queries can have.

    Returns:
        ``{"status": "checked", "train_data", "train_records", "query_records",
        "shared": 0, "query_classes", "query_classes_trained", "image_size"}`` or
        ``{"status": "unavailable", "reason"}``.

    Raises:
        TrainingOverlap: the training split holds a query-pool record.
    """
    found = _training_records(folder)
    if isinstance(found, str) and (folder / TRAINING_RECORD).is_file():
        found = _recorded_training(folder)
    if isinstance(found, str):
        return {"status": "unavailable", "reason": found}
    label, train_keys, key_of, size, trained, how = found
    query = {}
    for ecg_id in sorted(query_pool):
        path = resolver.path(ecg_id)
        key = None if path is None else key_of(path)
        if key is not None:
            query[key] = ecg_id
    shared = sorted(query[k] for k in train_keys if k in query)
    if shared:
        raise TrainingOverlap(
            f"{folder}: the adapter was trained on {len(shared)} record(s) of the bench's query "
            f"pool (e.g. ecg_id {shared[0]}, from {label}{how}); benchmark it on records it "
            "never trained on (query_splits, or --splits)")
    return {"status": "checked", "train_data": label,
            "train_records": len(train_keys), "query_records": len(query), "shared": 0,
            "query_classes": len(set(query_classes)),
            "query_classes_trained": len(set(query_classes) & trained), "image_size": size}


TRAINING_RECORD = "training.json"     # a shipped adapter's record of its training data


def header_digest(record: Path) -> str:
    """SHA-256 of a record's header file (``.hea``): WFDB headers hold each signal's
    checksum, so the digest names the record's content wherever a copy lies."""
    import hashlib

    return hashlib.sha256(Path(f"{record}.hea").read_bytes()).hexdigest()


def write_training_record(adapter: Path, data: Path) -> dict:
    """Write ``adapter/training.json``: the header digests of the training split's records
    and its question classes, so a copy of the adapter without its instruction data (a
    shipped one) can still be checked against a bench's query pool."""
    import json

    found = _training_records_of(data)
    if isinstance(found, str):
        raise EcgqaError(found)
    files, size, entries = found
    record = {"train_data": str(data), "image_size": size,
              "record_digests": sorted(header_digest(p) for p in files
                                       if Path(f"{p}.hea").is_file()),
              "classes": sorted({json.dumps(_entry_class(e)) for e in entries
                                 if e.get("split", "train") == "train"})}
    (adapter / TRAINING_RECORD).write_text(json.dumps(record) + "\n")
    return record


def _recorded_training(folder: Path) -> tuple:
    """What :func:`training_data_check` compares, from an adapter's ``training.json``:
    records are matched by their header digest."""
    import json

    record = json.loads((folder / TRAINING_RECORD).read_text())

    def key_of(path):
        return header_digest(path) if Path(f"{path}.hea").is_file() else None

    trained = {tuple(_listify(json.loads(c))) for c in record["classes"]}
    return (record["train_data"] + " (by record digest)", set(record["record_digests"]),
            key_of, record.get("image_size"), trained, "; same record header")


def _listify(c) -> tuple:
    """A class key read back from JSON: lists to tuples."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in c)


def _entry_class(entry: dict) -> tuple:
    """``class_key`` of an instruction entry of ``ecgqa data instruct`` (ECG-QA source)."""
    def terms(value) -> tuple:
        return tuple(sorted(value if isinstance(value, list) else [] if value is None
                            else [value]))

    return (entry.get("template_id"), terms(entry.get("attribute")), terms(entry.get("answer")))


def _training_records(folder: Path) -> tuple | str:
    """What :func:`training_data_check` compares, from the run folder beside the adapter:
    ``(instruction data, its training records' files, the key of a query record path (its
    resolved file), its image size, its question classes, "")``, or why unknown."""

    import yaml

    run = folder.parent / "config.yaml"
    try:
        data_path = Path(yaml.safe_load(run.read_text())["data"]["path"]).expanduser()
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return (f"no train-lora config.yaml with data.path beside the adapter folder "
                f"({run}), so its training data is unknown")
    found = _training_records_of(data_path)
    if isinstance(found, str):
        return found
    files, size, entries = found
    return (str(data_path), files, _real, size, {_entry_class(e) for e in entries}, "")


def _training_records_of(data_path: Path) -> tuple[set[Path], list | None, list] | str:
    """(the training records' files, image size, entries) of instruction data, or why
    unknown."""
    import json

    train = data_path / "train.json" if data_path.is_dir() else data_path
    meta_file = (data_path if data_path.is_dir() else data_path.parent) / "meta.json"
    try:
        entries = json.loads(train.read_text())
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return (f"the training data {train} or its meta.json cannot be read (not written by "
                "`ecgqa data instruct`, or moved)")
    if not isinstance(entries, list) or not isinstance(meta, dict):
        return f"{train} or its meta.json is not instruction data of `ecgqa data instruct`"
    if meta.get("source") != "ecgqa":
        return f"{data_path} was built from {meta.get('source')!r} records, not ECG-QA ecg_ids"
    files = _record_files(meta, entries)
    return files if isinstance(files, str) else (files, meta.get("size"), entries)


def instruct_resolver(meta: dict):
    """The records of instruction data built from ECG-QA-schema data, where ``ecgqa data
    instruct`` looked for them (its ``meta.json``'s inputs): ``ecg_id -> record path``.

    Raises:
        EcgQaError, KeyError, TypeError, OSError: the inputs are missing or not found.
    """
    from ecgqa.qa.ecgqa import find_version_root
    from ecgqa.qa.resolve import make_resolver

    inputs = meta.get("inputs") or {}
    return make_resolver(inputs.get("records") or find_version_root(inputs["qa"]))


def _record_files(meta: dict, entries: list) -> set[Path] | str:
    """The record files of instruction entries built from ECG-QA-schema data, or why they
    cannot be found."""
    from ecgqa.qa.ecgqa import EcgQaError

    try:
        resolver = instruct_resolver(meta)
    except (EcgQaError, KeyError, TypeError, OSError) as err:
        return f"the records of the training data cannot be found ({err})"
    ids = {int(i) for e in entries if e.get("split", "train") == "train"
           for i in e.get("ecg_id", [])}
    return {_real(p) for p in map(resolver.path, sorted(ids)) if p is not None}


def _real(path) -> Path:
    return Path(path).expanduser().resolve()
