"""Every package README's module table matches the code: the backticked names in the first column of its
``| module | holds |`` table(s) are exactly the modules of ``src/<import name>/`` (every ``*.py`` but
``__init__`` and ``__main__``), each listed once.

Pure file reading: nothing is imported and nothing is run. The umbrella package ``gpt2`` has no ``src/`` (it
holds no code), so it has no table to check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(src.parent for src in (ROOT / "packages").glob("*/src") if src.is_dir())
HEADER = ["module", "holds"]
NOT_MODULES = {"__init__", "__main__"}
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # a cell may hold an escaped pipe (`"auto"\|"torch"`)
BACKTICKED = re.compile(r"`([^`]+)`")


def cells(line: str) -> list[str] | None:
    """The cells of a markdown table row, stripped; None when ``line`` is not a table row."""
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return None
    return [cell.strip() for cell in CELL_SEPARATOR.split(line[1:-1])]


def table_modules(readme: Path) -> list[list[str]]:
    """Per ``| module | holds |`` table of ``readme``, the backticked names of its first column, in order."""
    tables: list[list[str]] = []
    lines = readme.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if cells(line) != HEADER:
            continue
        names: list[str] = []
        for row in lines[i + 2 :]:  # past the header and its |---|---| line
            row_cells = cells(row)
            if row_cells is None:
                break
            names += BACKTICKED.findall(row_cells[0])
        tables.append(names)
    return tables


def source_modules(package: Path) -> set[str]:
    """The module names of ``package``'s one import package under ``src/``."""
    import_dirs = [init.parent for init in (package / "src").glob("*/__init__.py")]
    assert len(import_dirs) == 1, f"{package.name}: expected one import package in src/, found {import_dirs}"
    return {path.stem for path in import_dirs[0].glob("*.py")} - NOT_MODULES


def test_packages_found() -> None:
    assert len(PACKAGES) >= 2, f"no packages with src/ under {ROOT / 'packages'}"


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_module_table_matches_code(package: Path) -> None:
    readme = package / "README.md"
    assert readme.is_file(), f"{package.name} has no README.md"
    tables = table_modules(readme)
    assert tables, f"{readme.relative_to(ROOT)} has no module table (a '| module | holds |' header row)"
    listed = [name for names in tables for name in names]
    modules = source_modules(package)
    missing = sorted(modules - set(listed))
    stale = sorted(set(listed) - modules)
    repeated = sorted({name for name in listed if listed.count(name) > 1})
    assert not (missing or stale or repeated), (
        f"{readme.relative_to(ROOT)}'s module table does not match src/: "
        f"missing {missing}, stale {stale}, listed twice {repeated}"
    )
