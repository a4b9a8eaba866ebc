"""A built wheel works without the source tree: it ships the prompt files (the top-level
prompts/ folder as ``ecgqa.prompts``) and the asset folders, and ``ecgqa chat`` answers
from it.

The wheel is built offline from a copy of the tree (so the shared checkout gets no build/
folder) and unpacked into a temporary folder that PYTHONPATH puts first; the commands run
in another working directory, so nothing is read from the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from tests.conftest import REAL, ROOT

ECG = REAL / "ptbxl" / "00001_lr.hea"             # PTB-XL ecg_id 1, 100 Hz
PROMPTS = sorted(p.name for p in (ROOT / "prompts").glob("*.yaml"))


def _source_files(folder: Path) -> list[str]:
    """The files under ``folder`` that a wheel must carry, relative to the project root."""
    return sorted(p.relative_to(ROOT).as_posix() for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built with ``pip wheel --no-deps --no-build-isolation`` (offline)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("ecgqa", "prompts"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "dist").glob("ecgqa-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    """The wheel's contents, as an installer would put them in site-packages."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd`` with only the unpacked wheel on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_wheel_ships_the_prompts_and_every_asset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    prompts = [f"ecgqa/prompts/{name}" for name in PROMPTS]
    assets = [f for f in _source_files(ROOT / "ecgqa" / "assets") if not f.endswith(".py")]
    assert {"qa.yaml", "image_qa.yaml", "image_qa_signal.yaml"} <= set(PROMPTS)
    assert any(f.endswith(".safetensors") for f in assets)
    assert set(prompts) | set(assets) <= names, sorted(set(prompts) | set(assets) - names)
    src = wheel.parents[1] / "src"                      # the tree it was built from
    inits = {f"{p.replace('.', '/')}/__init__.py" for p in find_packages(src, include=["ecgqa*"])}
    assert inits <= names, sorted(inits - names)        # every subpackage, found by setup.py
    for name in PROMPTS:                                # the one copy, not a stale one
        shipped = zipfile.ZipFile(wheel).read(f"ecgqa/prompts/{name}")
        assert shipped == (ROOT / "prompts" / name).read_bytes(), name
    print(f"wheel: {wheel.stat().st_size / 2**20:.1f} MiB")


@pytest.mark.slow
def test_the_unpacked_wheel_finds_and_loads_its_prompts(unpacked, tmp_path):
    script = (
        "import json, ecgqa, ecgqa.assets as a\n"
        "from ecgqa.qa.collate import PromptTemplate\n"
        "from ecgqa.image_qa.inputs import ImagePrompt\n"
        f"files = {{n: str(a.prompt_file(n)) for n in {PROMPTS!r}}}\n"
        "t = PromptTemplate.load()\n"
        "i = ImagePrompt.load()\n"
        "s = ImagePrompt.load(a.prompt_file('image_qa_signal.yaml'))\n"
        "print(json.dumps({'package': ecgqa.__file__, 'files': files,\n"
        "                  'encoder': str(a.ENCODER_DEFAULT), 'adapter': str(a.signal_adapter"
        "('default')), 'texts': [t.single, i.first, s.first]}))\n")
    done = _run(unpacked, tmp_path, "-c", script)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert Path(out["package"]).is_relative_to(unpacked)
    for name, path in out["files"].items():
        assert Path(path) == unpacked / "ecgqa" / "prompts" / name
    assert (Path(out["encoder"]) / "model.safetensors").is_relative_to(unpacked)
    assert (Path(out["adapter"]) / "projector.safetensors").is_file()
    assert all(out["texts"])


@pytest.mark.slow
def test_chat_answers_from_the_unpacked_wheel(unpacked, tmp_path):
    """`python -m ecgqa chat` with the embedded LLM, the shipped encoder, adapter and
    prompt, all from the wheel: one question on a real record."""
    helped = _run(unpacked, tmp_path, "-m", "ecgqa", "chat", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--question" in helped.stdout
    done = _run(unpacked, tmp_path, "-m", "ecgqa", "chat", "--ecg", str(ECG),
                "--question", "Does this ECG show sinus rhythm?", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {o["text"] for o in out["options"]} == {"yes", "no"}
    assert abs(sum(o["prob"] for o in out["options"]) - 1) < 1e-5
    assert out["answer"] in {"yes", "no", "not sure"} and out["record"] == str(ECG)
