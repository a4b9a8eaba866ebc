"""The packages of the wheel: every ecgqa subpackage (found, so a new one needs no edit here)
and the top-level prompts/ folder as ``ecgqa.prompts``, the one copy of the prompt files
that is edited. pyproject.toml holds everything else; it cannot find packages and map one
onto another folder in the same table.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ecgqa", "ecgqa.*"]), "ecgqa.prompts"],
    package_dir={"ecgqa.prompts": "prompts"},
)
