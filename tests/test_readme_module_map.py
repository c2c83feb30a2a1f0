"""README's module map names every module and package of hiera_bench/, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _map_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Module map", 1)[1]
    return section.split("```", 2)[1]


def test_module_map_matches_the_package():
    package = ROOT / "hiera_bench"
    modules = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    packages = {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    lines = _map_block().splitlines()[1:]  # after "hiera_bench/"
    named = set()
    for line in lines:
        if line.startswith("  ") and not line.startswith("   "):  # an entry's own line, not a wrapped description
            head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            named |= set(re.findall(r"\b\w+\.py\b|\b\w+/", head))
    assert modules | packages == named, {"missing from README": sorted((modules | packages) - named),
                                         "not in the package": sorted(named - (modules | packages))}
