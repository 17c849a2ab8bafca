"""The package graph is honest: every import of a workspace package is declared, the declared graph has no
cycle, gpt2-core stands alone (no CLI, data, logging, serving or HF library, no other gpt2 package), and each
package finds its own built-in plugins without entry points."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_SRC = ROOT / "packages" / "gpt2-core" / "src" / "gpt2_core"
FORBIDDEN = {
    "typer",
    "click",
    "rich",
    "datasets",
    "tensorboard",
    "transformers",
    "onnx",
    "onnxruntime",
    "starlette",
    "uvicorn",
    "fastapi",
}
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, including imports inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declared(package: Path) -> set[str]:
    """The workspace distributions ``package`` depends on (by normalised name: gpt2-core)."""
    import tomllib

    deps = tomllib.loads((package / "pyproject.toml").read_text())["project"].get("dependencies", [])
    names = {re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0].strip().lower().replace("_", "-") for d in deps}
    return {n for n in names if n == "gpt2" or n.startswith("gpt2-")}


def test_every_workspace_import_is_declared() -> None:
    assert len(PACKAGES) >= 8
    for package in PACKAGES:
        own = package.name.replace("-", "_")
        imported = set()
        for path in (package / "src").rglob("*.py"):
            imported |= {m for m in imported_modules(path) if m.startswith("gpt2_") and m != own}
        missing = {m.replace("_", "-") for m in imported} - declared(package)
        assert not missing, (
            f"{package.name} imports {sorted(missing)} without declaring them in pyproject.toml"
        )


def test_declared_graph_has_no_cycle() -> None:
    graph = {p.name: declared(p) for p in PACKAGES}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
    assert graph["gpt2-cli"] == {"gpt2-core"}  # the host depends on no plugin
    assert graph["gpt2"] == set(graph) - {"gpt2"}  # the umbrella install gives the whole toolkit


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (at import time or inside a function), not those under
    ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for child in node.orelse for i in runtime_imports(ast.Module(body=[child])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from runtime_imports(node)


def module_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    modules = {}
    for path in src.rglob("*.py"):
        parts = path.relative_to(src.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                targets |= subs or {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of modules that leads back to its first one, or None (depth-first search)."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                return [*path, name, dep]
            if dep not in state and (circle := visit(dep, [*path, name])):
                return circle
        state[name] = "done"
        return None

    return next(filter(None, (visit(n, []) for n in sorted(graph) if n not in state)), None)


def test_no_import_circle_inside_a_package() -> None:
    """No module imports, directly or through others, one that imports it back, not even inside a function:
    built-ins are registered by dotted name (``register_builtin``), commands live in their own modules."""
    sources = [init.parent for init in ROOT.glob("packages/*/src/*/__init__.py")]
    assert len(sources) >= 8
    for src in sources:
        circle = find_circle(module_graph(src))
        assert circle is None, f"import circle: {' -> '.join(circle)}"
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself


BUILTINS = r"""
import tempfile
from pathlib import Path
import gpt2_data
from gpt2_export.exporters import exporter_registry
from gpt2_sft.datasets import build_instruction_dataset
from gpt2_train.config import TrainConfig
from gpt2_train.loggers import build_loggers

ds = gpt2_data.build_dataset("python-stdlib")
assert next(iter(ds.documents()))
with tempfile.TemporaryDirectory() as d:
    Path(d, "a.jsonl").write_text('{"instruction": "hi", "output": "yo"}\n')
    assert list(build_instruction_dataset("alpaca", {"path": str(Path(d, "a.jsonl"))}).conversations())
    build_loggers(["console"], Path(d), TrainConfig()).close()
assert {"hf", "onnx"} <= set(exporter_registry())
print("OK")
"""


@pytest.mark.parametrize("how", ["allow-list empty", "no entry points"])
def test_builtins_are_found_without_entry_points(how: str) -> None:
    env = {**os.environ, "GPT2_LOAD_PLUGINS": ""} if how == "allow-list empty" else dict(os.environ)
    code = BUILTINS
    if how == "no entry points":
        code = "import importlib.metadata as m\nm.entry_points = lambda **kw: []\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_sft_command_module_imports_no_other_plugins_cli() -> None:
    cli = ROOT / "packages" / "gpt2-sft" / "src" / "gpt2_sft" / "cli.py"
    tree = ast.parse(cli.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in modules if m.endswith(".cli") and not m.startswith("gpt2_sft")}


def test_core_sources_import_nothing_forbidden() -> None:
    files = sorted(CORE_SRC.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        bad = {
            m
            for m in imported_modules(path)
            if m in FORBIDDEN or (m.startswith("gpt2_") and m != "gpt2_core")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_importing_all_of_core_loads_nothing_forbidden() -> None:
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import gpt2_core
        for mod in pkgutil.walk_packages(gpt2_core.__path__, "gpt2_core."):
            importlib.import_module(mod.name)
        from gpt2_core import GPT, PRESETS  # the lazy names too
        loaded = {m.split(".")[0] for m in sys.modules}
        print(sorted(m for m in loaded if m in FORBIDDEN or (m.startswith("gpt2_") and m != "gpt2_core")))
        """
    )
    env = {**os.environ, "GPT2_LOAD_PLUGINS": ""}
    out = subprocess.run(
        [sys.executable, "-c", f"FORBIDDEN = {sorted(FORBIDDEN)!r}\n{code}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_light_modules_do_not_import_torch() -> None:
    """The CLI's --help and data preparation workers import these; torch costs seconds and ~650 MB."""
    light = [
        "gpt2_core",
        "gpt2_core.errors",
        "gpt2_core.hookspecs",
        "gpt2_core.plugins",
        "gpt2_core.sampling",
    ]
    light += ["gpt2_core.dataclass_utils", "gpt2_core.tokenizer", "gpt2_core.config", "gpt2_core.runtime"]
    code = f"import sys\nfor m in {light!r}:\n    __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_public_name_is_also_a_submodule() -> None:
    """``from pkg import name`` must give the same object whether or not ``pkg.name`` the submodule was imported:
    once a submodule is imported it becomes an attribute of its package and shadows a lazy export."""
    for package in PACKAGES:
        for init in (package / "src").glob("*/__init__.py"):
            tree = ast.parse(init.read_text())
            exported: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
                ):
                    exported |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
            submodules = {p.stem for p in init.parent.glob("*.py")} | {
                p.parent.name for p in init.parent.glob("*/__init__.py")
            }
            assert not exported & submodules, f"{init}: {sorted(exported & submodules)} name both"


GENERATE = """
import importlib.util, sys, tempfile
import torch
from gpt2_core import GPT, get_preset
from gpt2_core.generation import generate
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import Tokenizer

torch.manual_seed(0)
with tempfile.TemporaryDirectory() as d:
    GPT(get_preset("nano")).save_pretrained(d)
    model = GPT.from_pretrained(d)
    (text,) = generate(model, Tokenizer.for_config(model.config), "Hello", SamplingConfig(max_new_tokens=5, seed=0))
assert isinstance(text, str) and text, text
missing = [m for m in ("typer", "click", "datasets", "tensorboard", "transformers", "gpt2_cli", "gpt2_data")
           if importlib.util.find_spec(m) is None]
print("ABSENT", missing)
print("CORE", importlib.util.find_spec("gpt2_core").origin)
"""


def test_core_installs_and_generates_alone(tmp_path: Path) -> None:
    """Only gpt2-core and its locked dependencies in a fresh venv (offline: uv links from its cache)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"))}
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_OFFLINE="1", GPT2_LOAD_PLUGINS="")
    # `uv sync --package` installs one workspace member with exactly its locked dependencies; unlike
    # `uv pip install ./packages/gpt2-core` it needs no index (the lock pins every file), so it works offline.
    install = subprocess.run(
        [
            uv,
            "sync",
            "--frozen",
            "--package",
            "gpt2-core",
            "--no-dev",
            "--no-editable",
            # uv caches a local package's wheel by its pyproject.toml: rebuild from today's sources.
            "--reinstall-package",
            "gpt2-core",
            "--python",
            sys.executable,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run = subprocess.run(
        [str(python), "-W", "ignore", "-c", GENERATE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (
        "ABSENT ['typer', 'click', 'datasets', 'tensorboard', 'transformers', 'gpt2_cli', 'gpt2_data']"
        in run.stdout
    )
    assert str(venv) in run.stdout  # the installed copy, not the workspace's sources


def dependency_names(package: Path) -> list[str]:
    """The names of ``package``'s declared dependencies, without versions or extras, less the backports that
    only older Pythons get (``tomli; python_version < '3.11'``)."""
    import tomllib

    deps = tomllib.loads((package / "pyproject.toml").read_text())["project"].get("dependencies", [])
    return [re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0].strip().lower() for d in deps if ";" not in d]


def test_readme_package_table_names_every_dependency() -> None:
    """The root README's package table says what each package pulls in (gpt2-train's matplotlib was missing)."""
    rows = dict(
        re.findall(r"^\| `(gpt2[\w-]*)` \| [^|]* \| ([^|]*) \|$", (ROOT / "README.md").read_text(), re.M)
    )
    assert set(rows) == {p.name for p in PACKAGES}
    for package in PACKAGES:
        if rows[package.name].strip() == "all of the above":
            continue
        for name in dependency_names(package):
            short = name.removeprefix("gpt2-")  # siblings are named core, cli, ...
            assert re.search(rf"(?<![\w-]){re.escape(short)}(?![\w-])", rows[package.name]), (
                f"README.md's package table: {package.name} depends on {name}, which its row does not name"
            )


def test_torch_floor_covers_what_is_used() -> None:
    """gpt2-train subclasses torch.optim.Muon (gpt2_train/muon.py), new in torch 2.9: it declares that floor,
    so an older torch is refused at install time rather than failing at import."""
    import tomllib

    deps = tomllib.loads((ROOT / "packages" / "gpt2-train" / "pyproject.toml").read_text())["project"]
    floors = [re.fullmatch(r"torch>=([\d.]+)(,.*)?", d) for d in deps["dependencies"]]
    floor = next(m.group(1) for m in floors if m)
    assert tuple(int(x) for x in floor.split(".")[:2]) >= (2, 9), f"gpt2-train declares torch>={floor}"
