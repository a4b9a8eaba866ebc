"""ModelConfig: which encoder, projector, prompt and frozen LLM an EcgQaModel is built of.

Its fields are the ``model:`` section of a run's YAML and of a saved model's
``config.yaml`` (:mod:`ecgqa.models.saved`); :meth:`ecgqa.models.fusion.EcgQaModel.build`
builds the model from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgqa.config import field
from ecgqa.models.llm import LlmConfig


@dataclass
class ModelConfig:
    llm: LlmConfig = field(LlmConfig(), help="the frozen language model")
    encoder: str = field("default", help="'default' (the shipped pretrained encoder), a saved "
                         "encoder folder, or a registered encoder name (random weights)")
    encoder_kwargs: dict = field({}, help="constructor arguments for a registered encoder name")
    projector: str = field("attention", help="linear, mlp, attention or qformer")
    projector_kwargs: dict = field({}, help="extra projector arguments (dim, heads, layers ...)")
    n_ecg_tokens: int = field(8, help="ECG tokens per ECG spliced into the prompt")
    layout: str = field("question_first", help="question_first or ecg_first")
    prompt_file: str | None = field(None, help="prompt YAML (default prompts/qa.yaml)")
    score_normalise: str = field("mean", help="option scores: mean (length-normalised) or sum "
                                 "of token log-probabilities")
    max_new_tokens: int = field(24, help="generation length limit")
    measurements: bool = field(False, help="write each ECG's measured heart rate, RR, PR, QRS, "
                               "QT and QTc (ecgqa.records.measure, on the model-ready signal, "
                               "once per record) into the prompt's {measured} slot")
