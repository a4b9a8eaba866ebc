"""Imports run one way, down the data flow (STYLE.md section 6), with no circles.

The layers, lowest first::

    foundation (errors, assets, config, ...) < records < qa < synth < models < meta
        < image_qa < chat < bench < cli (and the recipes, ``__main__``, the package root)

A module imports its own layer or lower ones only, never the package root (which
re-exports the top layers), and no chain of imports, lazy ones inside functions included,
leads back to where it started. Imports under ``if TYPE_CHECKING:`` do not run and are
not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ecgqa"
FOUNDATION = {"errors", "assets", "config", "userfiles", "outputs", "registry", "workpool",
              "intervals", "recipe", "trainrun", "trainstate"}
ORDER = ["foundation", "records", "qa", "synth", "models", "meta", "image_qa", "chat",
         "bench", "top"]
TOP = {"cli", "__main__", "train_meta", "train_lora", "<root>"}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "<root>"
    if name in FOUNDATION:
        return "foundation"
    return "top" if name in TOP else name


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ecgqa modules ``module`` imports (anywhere in it, outside TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pieces = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(pieces + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        for target in targets:
            if target.split(".")[0] != "ecgqa":
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_module_has_a_layer():
    unknown = {_layer(m) for m in _modules()} - set(ORDER)
    assert not unknown, f"modules outside the layer order: {unknown}"


def test_no_module_imports_a_layer_above_it_or_the_package_root():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if target == "ecgqa" and module != "ecgqa":
                upward.append(f"{module} -> the package root")
            elif ORDER.index(_layer(target)) > ORDER.index(_layer(module)):
                upward.append(f"{module} ({_layer(module)}) -> {target} ({_layer(target)})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_lazy_imports_and_ignores_type_checking(tmp_path):
    """The walk must find an import inside a function (a lazy upward import is still one)."""
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ecgqa.chat import X\n"
           "def f():\n    from ecgqa.bench import runner\n    from . import sibling\n")
    path = tmp_path / "mod.py"
    path.write_text(src)
    modules = {"ecgqa.bench.runner": path, "ecgqa.qa.sibling": path, "ecgqa.chat": path}
    assert _imports("ecgqa.qa.mod", path, modules) == {"ecgqa.bench.runner", "ecgqa.qa.sibling"}


def test_no_file_over_the_line_limit():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_statistics_do_not_load_meta_learning():
    """Computing a confidence interval in the bench imports neither learn2learn nor the
    chat and meta layers (the package root re-exports them lazily)."""
    code = ("import ecgqa.bench.metrics, sys; "
            "bad = [m for m in ('learn2learn', 'ecgqa.meta', 'ecgqa.chat') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)


def test_the_readme_layout_names_every_module_and_package():
    readme = (PKG.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if path.name == "__init__.py" and rel.parent != Path("."):
            name = f"{rel.parent.name}/"
        elif path.parent == PKG or path.parent.parent == PKG:
            name = path.name
        else:
            continue                          # deeper files: their package is named
        if path.name not in ("__init__.py", "__main__.py") or name.endswith("/"):
            if name not in layout:
                missing.append(str(rel))
    assert not missing, f"README's layout does not name: {missing}"
