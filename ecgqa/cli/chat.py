"""``ecgqa chat``: questions about one or two ECG records, or a picture of one."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    """The ``chat`` subcommand."""
    from ecgqa.chat import DEFAULT_MAX_SHOTS, DEFAULT_THRESHOLD

    p = sub.add_parser("chat", help="ask questions about a real ECG (REPL or one question)",
                       description="Load one ECG record (two to compare), print its leads, "
                       "rate, duration, heart rate and intervals, then answer questions typed "
                       "at the prompt with a meta-trained adapter. Yes/no, 'which ..., A or "
                       "B?' and ECG-QA template questions show the probability of each option "
                       "(\"not sure\" below --threshold); other questions are mapped to the "
                       "closest known question (rhythm, conduction, axis, interval ranges, "
                       "rate, noise, extra systoles) and scored the same way, or answered with "
                       "what can be asked; free generated text only with --generate. "
                       "Commands: /plot, /leads I,II, /summary, /help, /quit. With a LoRA "
                       "image adapter (ecgqa train-lora) the same questions are answered "
                       "about a picture of one ECG: --image FILE (a photo, scan or rendered "
                       "PNG/JPG), or --ecg RECORD --modality image (the record drawn as the "
                       "adapter's training images). Research software, not a medical device.")
    p.add_argument("--ecg", action="append", default=None, metavar="RECORD",
                   help="ECG record (x.hea, x.mat, x.dat or bare name x); give it twice, "
                   "--ecg FIRST --ecg SECOND, for comparison questions (signal modality)")
    p.add_argument("--image", action="append", default=None, metavar="FILE",
                   help="a picture of one 12-lead ECG (photo, scan or rendered PNG/JPG) instead "
                   "of --ecg; implies --modality image; read by the shipped image adapter, or by "
                   "--adapter DIR, a LoRA image "
                   "adapter")
    p.add_argument("--modality", choices=("signal", "image"), default=None,
                   help="what the model reads: 'signal' (the record's samples, a train-meta "
                   "adapter; the default) or 'image' (a picture of the ECG, a train-lora "
                   "adapter; an --ecg record is drawn as the adapter's training images were)")
    p.add_argument("--adapter", default="default", metavar="DIR",
                   help="adapter folder: written by ecgqa train-meta (signal), or by ecgqa "
                   "train-lora (image: RUN/adapter or RUN); or a shipped one: 'default' (the "
                   "default: trained on every class of real and synthetic questions), "
                   "'heldout' (the benchmark's, some classes held out) or 'image' (the "
                   "shipped LoRA image adapter, which --image / --modality image use when "
                   "the adapter is left at 'default')")
    p.add_argument("--question", default=None, metavar="TEXT",
                   help="answer this one question and exit instead of starting the REPL")
    p.add_argument("--json", action="store_true", help="with --question: print one JSON "
                   "object {answer, options [{text, prob}], confidence, record, adapter, ...}")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="P",
                   help="answer 'not sure' when the best option's probability is below P "
                   f"(default {DEFAULT_THRESHOLD})")
    p.add_argument("--generate", action="store_true",
                   help="answer questions that match no known question in free generated "
                   "text, streamed (unscored; off by default: such questions are answered "
                   "with what can be asked)")
    p.add_argument("--leads", default=None, metavar="LIST",
                   help="let the model see only these leads, e.g. 'I,II' or 'limb' "
                   "(default: all; /leads in the REPL; signal modality only)")
    p.add_argument("--shots", default=None, metavar="FILE",
                   help="ECG-QA-schema examples (a JSON shard or a dataset folder) to adapt "
                   "the projector on before answering (few-shot personalisation; signal "
                   "modality only)")
    p.add_argument("--records", default=None, metavar="INDEX",
                   help="where the --shots ECGs are: records index CSV, PTB-XL or MIMIC-IV-ECG "
                   "folder (default: records_index.csv beside the --shots file or above)")
    p.add_argument("--max-shots", type=int, default=DEFAULT_MAX_SHOTS, metavar="N",
                   help=f"adapt on at most the first N --shots examples (default "
                   f"{DEFAULT_MAX_SHOTS})")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    """Questions about one or two ECG records (ecgqa.chat)."""
    from ecgqa.chat import run

    return run(args)
