"""What an exporter is, and the machinery every export shares.

An exporter is registered through the ``register_exporters(register)`` hook as ``register(name, factory)``;
``factory()`` returns an object following :class:`Exporter`: a one-line ``description`` (for
``gpt2 export --list``), the ``dtypes`` it can write, and ``export(job)``, which writes its files into
``job.out``. The host does the rest, the same for every format: it finds the model (a model directory, a
training checkpoint, or a run directory's ``latest``), loads it, hands the exporter an empty staging
directory, and moves that into place only when the exporter returns, so a failed export never leaves a
half-written directory that looks like a model.

A format that is one file (GGUF) says so with ``file_name``: it writes that file into the staging directory,
and the host moves it to ``--out``, which then names the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gpt2_core.errors import UserError

if TYPE_CHECKING:
    import torch
    from gpt2_core.model import GPT

DTYPES = ("float32", "bfloat16", "float16")
"""The ``--dtype`` values an exporter may support."""

LATEST = "latest"
"""In a run directory: a link (or a file naming the directory) to the newest checkpoint."""


@dataclass
class ExportJob:
    """Everything an exporter needs: the loaded model, where to write, and facts for a model card."""

    model: GPT
    """The model, in float32 on the CPU, in eval mode."""
    out: Path
    """An empty directory to write into; it becomes ``--out`` once ``export`` returns."""
    dtype: str = "float32"
    """The ``--dtype`` asked for, one of the exporter's ``dtypes``."""
    source: Path | None = None
    """The model directory the weights came from."""
    info: dict[str, Any] = field(default_factory=dict)
    """Training facts saved with the model (config.json's ``info``: dataset, tokens, val loss, ...)."""
    options: dict[str, str] = field(default_factory=dict)
    """Format-specific flags the user gave (``gguf_type`` for ``--gguf-type``); unset ones are absent."""

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)


@runtime_checkable
class Exporter(Protocol):
    """A model export format. ``factory()`` (what plugins register) must return one of these."""

    description: str
    """One line for ``gpt2 export --list``."""
    dtypes: tuple[str, ...]
    """The ``--dtype`` values this format can write (a subset of :data:`DTYPES`)."""

    def export(self, job: ExportJob) -> None:
        """Write the model into ``job.out`` (an existing, empty directory)."""


def file_name(exporter: Exporter) -> str | None:
    """The one file a single-file format writes into ``job.out`` (its optional ``file_name``), or None
    for a format that writes a directory."""
    return getattr(exporter, "file_name", None)


def describe(factory: Callable[..., Any]) -> str:
    """The one-line description of a registered exporter factory, without building it."""
    text = getattr(factory, "description", None) or (factory.__doc__ or "").strip()
    return text.splitlines()[0] if text else ""


def exporter_registry() -> dict[str, Callable[[], Exporter]]:
    """Every registered exporter by name: ours (registered here even when entry points are not loaded)
    and every plugin's."""
    from gpt2_core.plugins import collect, register_builtin

    return collect("exporters", register_builtin("gpt2_export.builtins", "gpt2-export"))


def get_exporter(name: str, registry: dict[str, Callable[[], Exporter]] | None = None) -> Exporter:
    """The exporter registered as ``name``; a UserError naming ``--format`` and the choices otherwise."""
    if registry is None:
        registry = exporter_registry()
    if name not in registry:
        choices = ", ".join(sorted(registry)) or "none installed"
        raise UserError(f"--format {name!r}: unknown export format; choose one of: {choices}")
    return registry[name]()


def resolve_model_dir(path: Path, flag: str = "--model") -> Path:
    """The model directory ``path`` names: itself, or the checkpoint its ``latest`` points to (a run dir)."""
    from gpt2_core.weights import CONFIG_FILE

    if not path.exists():
        raise UserError(f"{flag} {path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{flag} {path}: not a directory; give a model, checkpoint or run directory")
    if (path / CONFIG_FILE).is_file():
        return path
    latest = path / LATEST
    if latest.is_dir():  # the symlink the trainer keeps to its newest checkpoint
        return latest
    raise UserError(
        f"{flag} {path}: no {CONFIG_FILE} (not a model or checkpoint directory) and no {LATEST} "
        "(not a run directory)"
    )


def load_source(path: Path, flag: str = "--model") -> tuple[GPT, Path, dict[str, Any]]:
    """Load the model at ``path`` for export: (model in float32 eval mode, its directory, its ``info``).

    A training checkpoint is a model directory plus trainer state; only the weights and config are read.
    """
    from gpt2_core.model import GPT
    from gpt2_core.weights import is_hf_config, load_config

    model_dir = resolve_model_dir(path, flag)
    raw = load_config(model_dir)
    info = {} if is_hf_config(raw) else dict(raw.get("info") or {})
    model = GPT.from_pretrained(model_dir).float().eval()
    return model, model_dir, info


def _is_within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def check_output(
    out: Path, *, force: bool = False, protect: Path | None = None, is_file: bool = False
) -> None:
    """Refuse an ``--out`` that is a file, a non-empty directory (unless ``force``) or holds ``protect``;
    with ``is_file`` (a single-file format), one that is a directory or an existing file (unless ``force``)."""
    if is_file:
        if out.is_dir():
            raise UserError(f"--out {out}: is a directory; this format writes one file, give its name")
        if out.exists() and not force:
            raise UserError(f"--out {out}: exists; use --force to replace it")
        if protect is not None and _is_within(out, protect):
            raise UserError(f"--out {out}: would write into the model being exported ({protect})")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out}: directory is not empty; use --force to replace it")
    if protect is not None and _is_within(protect, out):
        raise UserError(f"--out {out}: would overwrite the model being exported ({protect})")


def _make_public(root: Path) -> None:
    """Give the staged files the modes of ordinary new files (mkdtemp and some writers make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for path in root.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def staged_output(out: Path, *, force: bool = False, protect: Path | None = None) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out``; on success it replaces ``out`` in two renames.

    ``out`` must be missing or empty unless ``force``. On an exception the staging directory is removed
    and ``out`` is left as it was. ``protect`` (the source model) may not be ``out`` or inside it.
    """
    check_output(out, force=force, protect=protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _make_public(staging)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / "replaced")
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out)


def run_export(
    fmt: str,
    model_path: Path,
    out: Path,
    *,
    dtype: str = "float32",
    force: bool = False,
    registry: dict[str, Callable[[], Exporter]] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """``gpt2 export``: load ``model_path``, export it as ``fmt`` into ``out`` (a directory, or the file of
    a single-file format); returns ``out``. ``options``: format-specific flags, handed over in the job."""
    exporter = get_exporter(fmt, registry)
    supported = tuple(getattr(exporter, "dtypes", DTYPES))
    if dtype not in supported:
        raise UserError(f"--dtype {dtype!r}: format {fmt!r} writes one of: {', '.join(supported)}")
    single = file_name(exporter)
    check_output(out, force=force, is_file=single is not None)  # before the (slow) load
    model, model_dir, info = load_source(model_path)
    job = partial(
        ExportJob, model=model, dtype=dtype, source=model_dir, info=info, options=dict(options or {})
    )
    if single is None:
        with staged_output(out, force=force, protect=model_dir) as staging:
            exporter.export(job(out=staging))
        return out
    check_output(out, force=force, protect=model_dir, is_file=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The staging directory sits beside --out, so the finished file is renamed into place (atomic).
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        exporter.export(job(out=staging))
        _make_public(staging)
        os.replace(staging / single, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
