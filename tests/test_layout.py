"""Package layout rules that keep `accelerate launch ecgqa/<recipe>.py` safe.

That command puts ecgqa/ itself on sys.path, so a module `ecgqa/signal.py` would shadow
the stdlib and `ecgqa/datasets/` the Hugging Face package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ecgqa"


def _top_level_names() -> list[str]:
    names = [p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")]
    names += [p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    return sorted(names)


def test_no_top_level_module_shadows_stdlib_or_an_installed_package():
    assert "cli" in _top_level_names()
    for name in _top_level_names():
        assert name not in sys.stdlib_module_names, name
        spec = importlib.util.find_spec(name)
        assert spec is None or PKG in Path(spec.origin or "").parents, (name, spec)
