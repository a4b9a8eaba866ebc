"""LoRA instruction tuning on ECG images: a thin recipe (setup -> train -> cleanup).

    accelerate launch ecgqa/train_lora.py --config configs/lora/tiny.yaml [key=value ...]
    python ecgqa/train_lora.py --config configs/lora/default.yaml train.steps=50
    ecgqa train-lora --config configs/lora/default.yaml --train.lr 1e-4

Overrides are dotted config keys (``train.lr=1e-4`` or ``--train.lr 1e-4``);
``--help-config`` lists them all with their help text.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):               # run as a script: `ecgqa/` itself is on sys.path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from ecgqa.image_qa.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
