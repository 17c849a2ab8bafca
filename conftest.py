"""Test-wide setup: no test may touch the network, and fixture plugin packages can be put on the path.

The ``fixture_plugin`` fixture makes a package under ``tests/fixtures/<name>/`` importable *with its
entry-point metadata* (a ``.dist-info`` written from its ``pyproject.toml``), which is exactly what
``pip install`` would give importlib.metadata, without building or downloading anything.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomllib

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "tests" / "fixtures"


def install_on_path(package_dir: Path, target: Path) -> Path:
    """Copy a src-layout package into ``target`` and write its dist-info (METADATA, entry_points.txt)."""
    for module in (package_dir / "src").iterdir():
        shutil.copytree(module, target / module.name, dirs_exist_ok=True)
    return write_dist_info(package_dir, target)


def write_dist_info(package_dir: Path, target: Path) -> Path:
    """Write only the dist-info of a src-layout package into ``target``: with its ``src`` on the path too,
    importlib.metadata then finds the package's entry points as after ``pip install``."""
    meta = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
    dist = target / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--torch-device",
        help="torch's default device for the whole run (e.g. cuda): tests written for the CPU then create "
        "their tensors there (bench/gpu_acceptance.py runs the model and generation tests so)",
    )


def pytest_configure(config: pytest.Config) -> None:
    device = config.getoption("--torch-device")
    if device:
        import torch

        torch.set_default_device(device)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` where no CUDA GPU is present."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def fixture_plugin(tmp_path: Path) -> Iterator[Callable[[str], dict[str, str]]]:
    """``fixture_plugin("gpt2-example-logger")`` installs tests/fixtures/<name> for this test.

    In-process: on ``sys.path`` with the plugin manager cache cleared. Returns an environment for
    subprocesses (``PYTHONPATH`` including it).
    """
    from gpt2_core.plugins import get_plugin_manager

    added: list[str] = []

    def install(name: str) -> dict[str, str]:
        site = install_on_path(FIXTURES / name, tmp_path / f"site-{name}")
        sys.path.insert(0, str(site))
        added.append(str(site))
        importlib.invalidate_caches()
        get_plugin_manager.cache_clear()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(added + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    yield install
    for site in added:
        sys.path.remove(site)
    importlib.invalidate_caches()
    get_plugin_manager.cache_clear()
