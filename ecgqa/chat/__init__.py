"""``ecgqa chat``: ask questions about one ECG record (or compare two) with a saved adapter.

One module per job: :mod:`~ecgqa.chat.questions` (what kind of question, its options),
:mod:`~ecgqa.chat.answers` (option probabilities -> an answer), :mod:`~ecgqa.chat.adapters`
(which adapter, loaded how), :mod:`~ecgqa.chat.session` (the signal session),
:mod:`~ecgqa.chat.image_session` (the image session), :mod:`~ecgqa.chat.terminal` (REPL,
spinner) and :mod:`~ecgqa.chat.command` (the ``ecgqa chat`` command).

Data flow of one question::

    --ecg file(s) --read_record--> EcgRecord --encoder input spec, lead mask--> RecordSignals
    question --classify_question--> yes/no | choice | template (options) | open
    EcgQaModel.make_batch --score_options (closed: option probabilities)--> Answer
                          --generate (open: text, streamed)-------------->

:class:`Session` is the library API the REPL, ``--question`` and the tests share::

    >>> s = Session(["../shared/data/real/ptbxl/00001_lr.hea"])
    >>> a = s.ask("Does this ECG show sinus rhythm?")
    >>> a.answer, [(o.text, round(o.prob, 2)) for o in a.options]

With ``shots`` the projector is first adapted on a few ECG-QA-schema examples (the
adapter's own inner loop), so answers follow the user's labelled examples.

The image modality (a LoRA image adapter written by ``ecgqa train-lora``) answers the same
questions the same way about a picture of an ECG::

    --image photo/scan/PNG --read_image--> RGB image ----------------------+
    --ecg file --read_record--> EcgRecord --render_image (the adapter's     +--> ImageQaModel
                   training size, plain printout)--> RGB image ------------+
        --score_options (closed) / generate (open)--> Answer

:class:`ImageSession` has the surface :func:`repl` and :func:`run` use (``ask``,
``summary``, ``plot``, ``set_leads``); both sessions answer through :func:`decide`.
"""

from __future__ import annotations

from ecgqa.chat.adapters import RenderSettings, classify_adapter, render_settings
from ecgqa.chat.answers import (
    DEFAULT_MAX_SHOTS,
    DEFAULT_THRESHOLD,
    DISCLAIMER,
    NOT_SURE,
    Answer,
    Option,
    decide,
)
from ecgqa.chat.command import chat_modality, run
from ecgqa.chat.image_session import ImageSession, read_image
from ecgqa.chat.questions import (
    ChatError,
    QuestionKind,
    classify_question,
    closest_kind,
    is_yes_no,
    listed_options,
    match_template,
    what_can_be_asked,
)
from ecgqa.chat.session import RecordSignals, Session, load_shots, to_input_spec
from ecgqa.chat.terminal import Spinner, repl

__all__ = ["Answer", "ChatError", "DEFAULT_MAX_SHOTS", "DEFAULT_THRESHOLD", "DISCLAIMER",
           "ImageSession", "NOT_SURE", "Option", "QuestionKind", "RecordSignals",
           "RenderSettings", "Session", "Spinner", "chat_modality", "classify_adapter",
           "classify_question", "closest_kind", "decide", "is_yes_no", "listed_options",
           "load_shots", "match_template", "read_image", "render_settings", "repl", "run",
           "to_input_spec", "what_can_be_asked"]
