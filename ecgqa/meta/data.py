"""Episodes for meta-training, meta-validation and meta-testing, leak-free by construction.

Classes are split once (:func:`ecgqa.qa.episodes.split_classes`): meta-training draws
meta-train classes from the ``train`` split, meta-validation and meta-testing draw the
held-out classes from ``valid`` and ``test``. Episode ``g`` of a phase is fully determined
by ``(seed, g)``: its question type is ``types[g % len(types)]`` and its samples come
from that type's sampler, so any number of processes draw the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ecgqa.config import field
from ecgqa.errors import EcgqaError
from ecgqa.qa.ecgqa import QUESTION_TYPES, EcgQaData, load_ecgqa, load_qa_file
from ecgqa.qa.episodes import ClassSplit, Episode, EpisodeSampler, split_classes
from ecgqa.qa.resolve import make_resolver


class MetaDataError(EcgqaError):
    """The data cannot give the episodes the config asks for."""


@dataclass
class DataConfig:
    qa: str = field("out/synth", help="ECG-QA-schema folder: a real ECG-QA version folder or "
                    "the output of `ecgqa data synth`")
    records: str | None = field(None, help="records index CSV or PTB-XL/MIMIC-IV-ECG folder "
                                "(default: <qa>/records_index.csv)")
    synth_n_ecgs: int = field(0, help="when > 0 and `qa` does not exist yet, synthesise this "
                              "many ECGs there first")
    synth_seed: int = field(0, help="seed of that synthesis")
    labels: str | None = field(None, help="when set and `qa` does not exist yet, build it from "
                               "this label table first, as `ecgqa data labels` does (a CSV "
                               "of per-record codes or a folder of Challenge # Dx: records)")
    version: str = field("template", help="template or paraphrased questions")
    question_types: list[str] = field([], help="question types to use (empty: every type with "
                                      "enough classes)")
    ways: str = field("answers", help="what the N ways of an episode are: answers (answers to "
                      "one question, up to n_way and at least 2, k_shot each: only the ECG "
                      "tells them apart) or classes (any n_way (template, attribute, answer) "
                      "classes of a question type, as the few-shot ECG-QA paper: the "
                      "question's wording and the support's answers often give the answer "
                      "away)")
    n_way: int = field(5, help="classes per episode (with ways=answers: at most)")
    k_shot: int = field(5, help="support samples per class")
    q_query: int = field(2, help="query samples per class in meta-training")
    test_q_query: int = field(1, help="query samples per class in meta-validation/testing")
    holdout_by: str = field("attribute", help="meta-test classes held out by attribute or "
                            "template")
    test_fraction: float = field(0.3, help="fraction of attributes (templates) held out; 0: "
                                 "none (every class trains: an adapter for chat; no "
                                 "meta-validation or meta-test)")
    split_seed: int = field(0, help="seed of the class split")
    eval_seed: int = field(0, help="episode seed of meta-validation and meta-testing (fixed, "
                           "so every method is tested on the same episodes)")
    cache_dir: str | None = field(None, help="decoded-signal cache (default $ECGQA_CACHE or "
                                  "~/.cache/ecgqa)")


@dataclass
class Phase:
    """Samplers of one phase, one per question type, and the deterministic schedule."""

    name: str
    samplers: dict[str, EpisodeSampler]
    skipped: dict[str, str]

    @property
    def types(self) -> list[str]:
        return sorted(self.samplers)

    def episode(self, g: int) -> Episode:
        types = self.types
        return self.samplers[types[g % len(types)]].episode(g // len(types))

    def per_type(self, qtype: str, i: int) -> Episode:
        return self.samplers[qtype].episode(i)

    def ecg_ids(self) -> set[int]:
        """Every ECG this phase's episodes can draw."""
        return {i for sampler in self.samplers.values() for k in sampler.eligible
                for s in sampler.by_class[k] for i in s.ecg_ids}


@dataclass
class MetaData:
    data: EcgQaData
    classes: ClassSplit
    train: Phase
    valid: Phase
    test: Phase
    resolver: object

    def ecg_ids(self) -> list[int]:
        """Every ECG the three phases' episodes can draw, sorted."""
        return sorted(self.train.ecg_ids() | self.valid.ecg_ids() | self.test.ecg_ids())


def load_meta_data(cfg: DataConfig, seed: int) -> MetaData:
    """Load the QA data, split classes and build the three phases' samplers.

    Args:
        cfg: the data section of the config.
        seed: the meta-training episode seed (meta-validation/testing use ``cfg.eval_seed``).

    Raises:
        MetaDataError: no records index, or no question type with enough classes.
    """
    data, resolver, samples = load_available(cfg.qa, cfg.records, cfg.version,
                                             cfg.question_types)
    classes = split_classes(samples, test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                            by=cfg.holdout_by)
    phases = {}
    for name, allowed, q, s in (("train", classes.meta_train, cfg.q_query, seed),
                                ("valid", classes.meta_test, cfg.test_q_query, cfg.eval_seed),
                                ("test", classes.meta_test, cfg.test_q_query, cfg.eval_seed)):
        phases[name] = _phase(name, samples, name, allowed, cfg, q, s)
    if not phases["train"].samplers:
        what = ("a question with 2 answers" if cfg.ways == "answers"
                else f"{cfg.n_way} meta-train classes")
        raise MetaDataError(f"{cfg.qa}: no question type has {what} with "
                            f"{cfg.k_shot + cfg.q_query} samples each; use more ECGs "
                            "(data.synth_n_ecgs) or lower data.n_way / data.k_shot")
    return MetaData(data, classes, phases["train"], phases["valid"], phases["test"], resolver)


def load_available(qa: str, records: str | None, version: str = "template",
                   question_types: list[str] | None = None):
    """ECG-QA-schema data, its record resolver, and the samples whose ECGs exist.

    Args:
        qa: the QA folder, or one JSON file of samples in the ECG-QA schema.
        records: records index CSV or PTB-XL / MIMIC-IV-ECG folder (None:
            ``<qa>/records_index.csv``).

    Returns:
        ``(EcgQaData, resolver, available samples)``.

    Raises:
        MetaDataError: no records index, or no question has its ECG there.
    """
    if Path(qa).is_file():                                    # one shard, no release folder
        data = load_qa_file(qa, question_types)
    else:
        data = load_ecgqa(qa, version=version, question_types=question_types or None)
    records = records or (data.root / "records_index.csv")
    if not Path(records).exists():
        raise MetaDataError(f"{records}: no records index; give a CSV (ecg_id,path) or a "
                            "PTB-XL / MIMIC-IV-ECG folder")
    resolver = make_resolver(records)
    samples = data.select(available=resolver.available(data.ecg_ids()))
    if not samples:
        raise MetaDataError(f"{qa}: none of the {len(data)} questions has its ECG in {records}")
    return data, resolver, samples


def _phase(name, samples, split, allowed, cfg: DataConfig, q_query: int, seed: int) -> Phase:
    wanted = cfg.question_types or QUESTION_TYPES
    samplers, skipped = {}, {}
    for qt in wanted:
        try:
            samplers[qt] = EpisodeSampler(samples, cfg.n_way, cfg.k_shot, q_query, qt, split,
                                          classes=allowed, same_question=cfg.ways == "answers",
                                          seed=seed)
        except ValueError as err:
            skipped[qt] = str(err)
    return Phase(name, samplers, skipped)


def ensure_data(cfg: DataConfig) -> None:
    """Build ``cfg.qa`` when asked to (a label table or synthesis) and it is not there yet."""
    if cfg.labels and not Path(cfg.qa).exists():
        from tqdm.auto import tqdm

        from ecgqa.qa.labelqa import build_label_qa, measure_records
        from ecgqa.qa.labels import read_label_table

        table = read_label_table(cfg.labels)
        with tqdm(total=len(table.records), desc="measuring ECGs", unit="ecg") as bar:
            measured = measure_records(table.records,
                                       progress=lambda done, total: bar.update(done - bar.n))
        build_label_qa(table, cfg.qa, measurements=measured)
        return
    if cfg.synth_n_ecgs > 0 and not Path(cfg.qa).exists():
        from tqdm.auto import tqdm

        from ecgqa.synth.dataset import write_synthetic

        with tqdm(total=cfg.synth_n_ecgs, desc="synthesising ECGs", unit="ecg") as bar:
            write_synthetic(cfg.qa, cfg.synth_n_ecgs, cfg.synth_seed,
                            progress=lambda done, total: bar.update(done - bar.n))
