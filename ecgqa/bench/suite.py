"""A benchmark suite: which data, which adapter, and the grid of cells to evaluate.

A cell is one (question type, N-way, K-shot, lead subset); every cell runs the same
methods on the same episodes (fixed episode seed). Suites live in ``eval/suites/*.yaml``.
The ``modality`` says what the model reads: the ECG signal (a meta-trained adapter) or the
ECG rendered as an image (a LoRA adapter); both draw the same episodes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from ecgqa.config import ConfigError, field, short
from ecgqa.qa.ecgqa import QUESTION_TYPES
from ecgqa.qa.episodes import WAYS, answer_key, class_key, template_key
from ecgqa.records.leads import LEAD_SUBSETS, STANDARD_LEADS, is_standard_lead, parse_leads

METHODS = ("adapted", "combined", "no_adaptation", "zero_shot_text", "in_context", "protonet",
           "linear_probe", "majority")
"""``adapted`` is the adapter with test-time adaptation on the support set; ``combined``
weighs its option scores with the prototype classifier's, two weights fitted on
calibration episodes of classes the cell does not ask (:mod:`ecgqa.bench.combine`); the
rest are the baselines: the adapter without adaptation, the LLM without the ECG (text
prior), support ECG tokens and answers in the prompt, a prototypical network and a linear
probe on the frozen encoder features, and the support set's majority answer."""

IMAGE_METHODS = ("lora", "lora_disabled", "lora_blank", "lora_other", "protonet",
                 "linear_probe", "majority")
"""The image modality: the LoRA-tuned image model (support set unused), the same model with
its LoRA layers switched off (the untuned LLM reading the same image tokens), and the
support set's majority answer."""

MODALITIES = {"signal": METHODS, "image": IMAGE_METHODS}
"""What the model reads, and the methods each modality can run."""

CLASS_KEYS = {"question": class_key, "template": template_key, "answer": answer_key}
"""What makes two samples the same class of an episode (``class_by``)."""

MAX_CELLS = 10_000
"""The most cells a suite may ask for (question types x N-way x K-shot x lead subsets); a
real grid has tens, and every cell runs every method on ``episodes`` episodes."""


@dataclass
class SuiteConfig:
    name: str = field("suite", help="name shown in the results")
    qa: str = field("out/synth", help="ECG-QA-schema data: a real ECG-QA version folder, "
                    "`ecgqa data synth` output, or one JSON file of samples (with splits_file)")
    records: str | None = field(None, help="records index CSV or PTB-XL/MIMIC-IV-ECG folder "
                                "(default <qa>/records_index.csv)")
    synth_n_ecgs: int = field(0, help="when > 0 and `qa` does not exist, synthesise this many "
                              "ECGs there first")
    synth_seed: int = field(0, help="seed of that synthesis")
    labels: str | None = field(None, help="when set and `qa` does not exist, build it from this "
                               "label table first (`ecgqa data labels`: a CSV of per-record "
                               "codes or a folder of Challenge # Dx: records)")
    version: str = field("template", help="template or paraphrased questions")
    modality: str = field("signal", help="signal: a meta-trained adapter reads the ECG "
                          "signal; image: a LoRA adapter (train-lora's OUT/adapter) reads the ECG "
                          "rendered as an image; the same episodes either way")
    adapter: str = field("heldout", help="signal: adapter folder written by train-meta, or a "
                         "shipped one: 'heldout' (meta-trained with classes held out: honest "
                         "few-shot numbers) or 'default' (chat's, trained on every class); "
                         "image: a LoRA adapter folder")
    question_types: list[str] = field([], help="question types (empty: every type that has "
                                      "episodes)")
    n_way: list[int] = field([5], help="N-way values of the grid")
    k_shot: list[int] = field([5], help="K-shot values of the grid")
    leads: list[str] = field(["12-lead"], help="lead subsets of the grid: 12-lead, limb, I, "
                             "II, I+II+V1 ... or a list such as 'I,II,V1'")
    leads_at_k: int | None = field(None, help="evaluate lead subsets other than the first only "
                                   "at this K (a lead ablation without the full grid; None: "
                                   "at every K)")
    q_query: int = field(1, help="query samples per class and episode")
    episodes: int = field(200, help="episodes per cell")
    seed: int = field(0, help="episode seed (every method sees the same episodes)")
    classes: str = field("heldout", help="heldout: only classes held out of meta-training by "
                         "the split below (the adapter never trained on them); all: every class")
    class_by: str = field("question", help="question: (template, attribute, answer) classes, "
                          "as in meta-training; template: (template, answer); answer: the answer "
                          "alone (for data too small for finer classes)")
    ways: str = field("answers", help="answers: the N ways of an episode are N answers to one "
                      "question (template and attribute), so the wording cannot give the answer "
                      "away; classes: N classes of any questions, as in meta-training")
    holdout_by: str = field("attribute", help="the meta-training class split: attribute or "
                            "template")
    test_fraction: float = field(0.3, help="the meta-training class split: fraction held out")
    split_seed: int = field(0, help="the meta-training class split: its seed")
    support_splits: list[str] = field(["valid"], help="ECG-QA splits whose records form the "
                                      "support pool (when no --splits file is given)")
    query_splits: list[str] = field(["test"], help="ECG-QA splits whose records form the "
                                    "query pool (when no --splits file is given)")
    splits_file: str | None = field(None, help="JSON {\"support_pool\": [ecg_id...], "
                                    "\"query_pool\": [ecg_id...]} (overrides the splits "
                                    "above; relative to the suite file's folder)")
    options: str = field("template", help="candidate answers of option scoring: template (every "
                         "answer class of the question's template, plus combinations the support "
                         "shows) or support (only the answers the support set shows)")
    methods: list[str] = field([], help="methods to run (empty: every method of the "
                               "modality); signal: " + ", ".join(METHODS) + "; image: "
                               + ", ".join(IMAGE_METHODS))
    generate: bool = field(True, help="generate answers for exact match and text metrics")
    max_new_tokens: int | None = field(None, help="generation length limit (None: the "
                                       "adapter's)")
    test_steps: int | None = field(None, help="test-time adaptation steps (None: the "
                                   "adapter's own)")
    calibration_bins: int = field(10, help="bins of the ECE and the reliability diagram")
    calibration_episodes: int = field(50, help="episodes per cell on which the combined "
                                      "method fits its two weights: the cell's shape, classes "
                                      "the cell does not ask (the adapter's meta-training "
                                      "classes), another episode seed")
    cache_dir: str | None = field(None, help="decoded-signal cache (default $ECGQA_CACHE or "
                                  "~/.cache/ecgqa)")
    fast: bool = field(True, help="do support-free work once: batched scoring and generation, "
                       "prompt prefixes and the no_adaptation / zero_shot_text answers of each "
                       "distinct query computed once per run; false: the per-query path (the "
                       "same numbers, for timing it)")


@dataclass(frozen=True)
class Cell:
    question_type: str
    n_way: int
    k_shot: int
    leads: str

    @property
    def id(self) -> str:
        leads = self.leads.replace(",", "+")
        return f"{self.question_type}__{self.n_way}way{self.k_shot}shot__{leads}"


def resolve(cfg: SuiteConfig) -> SuiteConfig:
    """The suite with its defaults filled in: no methods listed means every method of the
    modality (``combined`` only with ``classes: heldout``). Validates first."""
    validate(cfg)
    every = [m for m in MODALITIES[cfg.modality]
             if m != "combined" or cfg.classes == "heldout"]     # combined needs held-out
    return replace(cfg, methods=list(cfg.methods or every))


def validate(cfg: SuiteConfig) -> None:
    """Check the suite before any data or model is loaded."""
    if cfg.modality not in MODALITIES:
        raise ConfigError(f"modality {cfg.modality!r}: use one of {', '.join(MODALITIES)}")
    allowed = MODALITIES[cfg.modality]
    unknown = [m for m in cfg.methods if m not in allowed]
    if unknown:
        raise ConfigError(f"methods: unknown {', '.join(unknown)} for modality "
                          f"{cfg.modality}; use {', '.join(allowed)}")
    bad = [t for t in cfg.question_types if t not in QUESTION_TYPES]
    if bad:
        raise ConfigError(f"question_types: unknown {short(bad[0])}; use "
                          f"{', '.join(QUESTION_TYPES)}")
    for name, values in (("n_way", cfg.n_way), ("k_shot", cfg.k_shot)):
        if not values or min(values) < 1:
            raise ConfigError(f"{name} must list values >= 1")
    if cfg.q_query < 1 or cfg.episodes < 1:
        raise ConfigError("q_query and episodes must be >= 1")
    if not cfg.leads:
        raise ConfigError(f"leads must list subsets ({', '.join(LEAD_SUBSETS)} or 'I,II,V1')")
    _check_grid(cfg)
    for spec in cfg.leads:
        if spec.count(",") >= 2 * len(STANDARD_LEADS):
            raise ConfigError(f"leads: {short(spec)} names more leads than an ECG has")
        try:
            names = parse_leads(spec)
        except ValueError as err:
            raise ConfigError(f"leads: {spec!r}: {err}") from None
        odd = [n for n in names if not is_standard_lead(n)]
        if odd:
            raise ConfigError(f"leads: {spec!r}: {', '.join(odd)} is not one of the 12 "
                              f"standard leads ({', '.join(STANDARD_LEADS)})")
    choices = (("classes", cfg.classes, ("heldout", "all")),
               ("class_by", cfg.class_by, tuple(CLASS_KEYS)),
               ("options", cfg.options, ("template", "support")),
               ("ways", cfg.ways, WAYS),
               ("holdout_by", cfg.holdout_by, ("attribute", "template")))
    for name, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{name} {value!r}: use one of {', '.join(allowed)}")
    if cfg.ways == "answers" and cfg.class_by != "question":
        raise ConfigError("ways: answers draws the answers of one question, which needs "
                          "class_by: question")
    if cfg.leads_at_k is not None and cfg.leads_at_k not in cfg.k_shot:
        raise ConfigError(f"leads_at_k {cfg.leads_at_k} is not one of k_shot {cfg.k_shot}")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise ConfigError("max_new_tokens must be >= 1")
    if cfg.test_steps is not None and cfg.test_steps < 0:
        raise ConfigError("test_steps must be >= 0")
    if cfg.calibration_episodes < 1:
        raise ConfigError("calibration_episodes must be >= 1")
    if "combined" in cfg.methods:
        missing = [m for m in ("adapted", "protonet") if m not in cfg.methods]
        if missing:
            raise ConfigError(f"methods: combined weighs adapted and protonet; list "
                              f"{' and '.join(missing)} too")
        if cfg.classes != "heldout":
            raise ConfigError("methods: combined fits its weights on classes the cell does not "
                              "ask, which needs classes: heldout (or leave combined out)")


def _check_grid(cfg: SuiteConfig) -> None:
    """Each grid list without repeats, and at most ``MAX_CELLS`` cells in all."""
    for name in ("question_types", "n_way", "k_shot", "leads"):
        seen: set = set()
        for v in getattr(cfg, name):
            if v in seen:
                raise ConfigError(f"{name} lists {short(v)} twice")
            seen.add(v)
    n = (len(cfg.question_types or QUESTION_TYPES) * len(cfg.n_way) * len(cfg.k_shot)
         * len(cfg.leads))
    if n > MAX_CELLS:
        raise ConfigError(f"the grid has {n} cells (question_types x n_way x k_shot x leads); "
                          f"at most {MAX_CELLS}: list fewer values")


def cells(cfg: SuiteConfig, types: list[str]) -> list[Cell]:
    """The grid: question types x N-way x K-shot x lead subsets."""
    return [Cell(t, n, k, leads) for t in types for n in cfg.n_way for k in cfg.k_shot
            for j, leads in enumerate(cfg.leads)
            if j == 0 or cfg.leads_at_k is None or k == cfg.leads_at_k]


def fingerprint(cfg: SuiteConfig, cell: Cell) -> str:
    """What a cell's results depend on; a finished cell is reused only when it matches.

    ``cfg`` is a :func:`resolve`-d suite. The signal modality leaves ``modality`` out, so
    cells written before the image modality existed stay valid.
    """
    keep = {k: v for k, v in asdict(cfg).items()
            if k not in ("name", "question_types", "n_way", "k_shot", "leads", "cache_dir",
                         "fast")}
    if keep["modality"] == "signal":
        del keep["modality"]
    text = json.dumps([keep, asdict(cell)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
