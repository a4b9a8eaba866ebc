"""Meta-train the projector: a thin recipe (setup -> train -> test -> cleanup).

    accelerate launch ecgqa/train_meta.py --config configs/meta/tiny.yaml [key=value ...]
    python ecgqa/train_meta.py --config configs/meta/default.yaml meta.algorithm=maml
    ecgqa train-meta --config configs/meta/default.yaml --train.steps 50

Overrides are dotted config keys (``meta.inner_lr=0.05`` or ``--meta.inner_lr 0.05``);
``--help-config`` lists them all with their help text.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):               # run as a script: `ecgqa/` itself is on sys.path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from ecgqa.meta.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
