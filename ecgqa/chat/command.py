"""``ecgqa chat``: the command run from its parsed options (REPL or one ``--question``)."""

from __future__ import annotations

import json
import sys

from ecgqa.chat.adapters import classify_adapter, image_adapter_folder
from ecgqa.chat.image_session import ImageSession
from ecgqa.chat.questions import ChatError
from ecgqa.chat.session import Session
from ecgqa.chat.terminal import Spinner, print_answer, repl


def run(args) -> int:
    """``ecgqa chat``: a REPL, or one ``--question`` (text or ``--json``)."""
    if args.json and not args.question:
        raise ChatError("--json needs --question (the REPL prints text)")
    if args.records and not args.shots:
        raise ChatError("--records locates the --shots examples' ECGs; give --shots too")
    modality = chat_modality(args)
    with Spinner() as status:
        if modality == "image":
            image = getattr(args, "image", None)
            session = ImageSession(args.adapter, image=image[0] if image else None,
                                   record=None if image else args.ecg[0],
                                   threshold=args.threshold, generate=args.generate,
                                   status=status)
        else:
            session = Session(args.ecg, args.adapter, shots=args.shots,
                              shots_records=args.records, max_shots=args.max_shots,
                              threshold=args.threshold, leads=args.leads,
                              generate=args.generate, status=status)
    if session.shots is not None:
        print(session.shots.format(), file=sys.stderr if args.json else sys.stdout)
    if args.question:
        if args.json:
            print(json.dumps(session.ask(args.question).to_json(), indent=2))
        else:
            print_answer(session, args.question, sys.stdout)
        return 0
    with Spinner() as status:
        status("measuring the records")
        summary = session.summary()
    print(summary)
    return repl(session)


def chat_modality(args) -> str:
    """``signal`` or ``image`` from ``--modality``, ``--image`` and the adapter's kind,
    checked before any model loads.

    Raises:
        ChatError: no ECG or both kinds, a modality the adapter does not answer in, or an
            option the image modality does not have (two ECGs, ``--shots``, ``--leads``).
    """
    ecgs, images = args.ecg or [], getattr(args, "image", None) or []
    wanted = getattr(args, "modality", None)
    if not ecgs and not images:
        raise ChatError("give an ECG: --ecg RECORD, or --image FILE with a LoRA image adapter")
    if ecgs and images:
        raise ChatError("give --ecg RECORD or --image FILE, not both")
    if images and wanted == "signal":
        raise ChatError("--image is a picture of the ECG: use --modality image (or leave "
                        "--modality out)")
    modality = "image" if images else wanted or "signal"
    flag = "--image" if images else "--modality image"
    if modality == "image":
        image_adapter_folder(args.adapter, flag)
    elif classify_adapter(args.adapter)[0] != "signal":
        raise ChatError(f"--adapter {args.adapter} is a LoRA image adapter (train-lora); add "
                        "--modality image to read the record as a picture, or give a "
                        "train-meta adapter")
    if modality == "image":
        if len(ecgs or images) > 1:
            raise ChatError(f"{flag} reads one ECG; compare two with --modality signal and a "
                            "train-meta adapter")
        for option, value in (("--shots", args.shots), ("--leads", args.leads)):
            if value is not None:
                raise ChatError(f"{option} works on the signal; not available with {flag}")
    return modality
