"""Text datasets: what ``gpt2 data prepare --dataset NAME`` tokenizes.

The protocol, which a third-party plugin implements too::

    class MyDataset(TextDataset):
        '''One line shown by ``gpt2 data list``.'''

        @dataclass
        class Options:
            lang: str = "en"
            '''Attribute docstrings become ``--lang`` in ``gpt2 data prepare`` and lines in ``gpt2 data list``.'''

        def documents(self) -> Iterator[str]:
            yield from ...  # each document's text, always in the same order (resuming relies on it)

and registered with ``register("my-dataset", MyDataset)`` from a ``register_datasets`` hook. The class is the
factory: ``MyDataset(MyDataset.Options(...))`` is cheap, and nothing is read until ``documents()`` runs.
Option fields must be ``str``, ``int``, ``float``, ``bool`` (or optional ones) so the CLI can parse them.

Heavy libraries (``datasets``) are imported inside ``documents()``, so listing datasets stays fast.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_core.dataclass_utils import field_docs, from_dict
from gpt2_core.decoding import Utf8Decoder
from gpt2_core.errors import UserError

from gpt2_data.records import SAMPLE_BY, TEXT_FORMATS, read_hub_rows, read_records, read_texts


class TextDataset:
    """Base class of datasets: an ``Options`` dataclass and ``documents()``.

    ``self.decoder`` turns the bytes a dataset reads into text (``gpt2_core.decoding``); it follows an
    ``encoding_errors`` option when the dataset has one, and ``gpt2 data prepare`` records how many bytes it
    replaced in each file.
    """

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else type(self).Options()
        self.decoder = Utf8Decoder(getattr(self.options, "encoding_errors", "replace"))

    def documents(self) -> Iterator[str]:
        """Every document's text, in an order that is the same on every run."""
        raise NotImplementedError


def describe(cls: type) -> str:
    """The first line of a dataset class's docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def options_of(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, doc)`` for each option of dataset class ``cls``."""
    options = getattr(cls, "Options", None)
    if options is None or not dataclasses.is_dataclass(options):
        return []
    docs = field_docs(options)
    out = []
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append((f.name, type_name, default, docs.get(f.name, "")))
    return out


def dataset_registry() -> dict[str, type]:
    """Every registered dataset class by name: ours (registered here even when entry points are not
    loaded) and every plugin's."""
    from gpt2_core.plugins import collect, register_builtin

    return collect("datasets", register_builtin("gpt2_data.builtins", "gpt2-data"))


def get_dataset_class(name: str) -> type:
    """The dataset class registered as ``name`` by any plugin."""
    found = dataset_registry()
    if name not in found:
        raise UserError(
            f"unknown dataset {name!r}; available: {', '.join(sorted(found)) or 'none'} (gpt2 data list)"
        )
    return found[name]


def build_dataset(name: str, options: dict[str, Any] | None = None) -> TextDataset:
    """Dataset ``name`` with ``options`` (field name -> value), checked against its ``Options`` dataclass."""
    cls = get_dataset_class(name)
    opts = from_dict(cls.Options, dict(options or {}), source=f"dataset {name!r}")
    return cls(opts)


# --- the built-in offline corpus -----------------------------------------------------------------------


class PythonStdlib(TextDataset):
    """The running Python's standard library sources and pydoc topics: offline, on every machine."""

    @dataclass
    class Options:
        include_tests: bool = False
        """Also include the standard library's test suites (about 2.5x more text, most of it tests)."""
        include_topics: bool = True
        """Also include pydoc's help topics (the language reference in prose)."""

    def files(self) -> list[Path]:
        root = Path(sysconfig.get_paths()["stdlib"])
        skip = {"site-packages", "dist-packages", "__pycache__"}
        if not self.options.include_tests:
            skip |= {"test", "tests", "idle_test"}
        found = []
        # os.walk with pruning: site-packages can hold far more files than the standard library itself.
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip]
            found += [Path(folder, f) for f in files if f.endswith(".py")]
        # Sorted relative posix paths: the same order on every OS and run, which resuming relies on.
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())

    def documents(self) -> Iterator[str]:
        for path in self.files():
            text = self.decoder.decode(path.read_bytes(), str(path))
            if text.strip():
                yield text
        if self.options.include_topics:
            from pydoc_data.topics import topics

            for key in sorted(topics):
                yield topics[key]


class Shakespeare(TextDataset):
    """Shakespeare's 38 plays as plain text (nanoGPT's layout), installed with gpt2-data: offline, 5 MB."""

    @dataclass
    class Options:
        document: str = "scene"
        """What one document is: a scene (about 750 of them), a play (38) or a speech (about 33,000)."""
        stage_directions: bool = True
        """Keep stage directions ([Enter Ghost]) between the speeches."""

    def documents(self) -> Iterator[str]:
        from gpt2_data.shakespeare import render_scene, render_speeches, scenes

        opts = self.options
        if opts.document not in ("scene", "play", "speech"):
            raise UserError(f"--document {opts.document!r}: choose scene, play or speech")
        if opts.document == "speech":
            for scene in scenes():
                yield from render_speeches(scene, directions=opts.stage_directions)
            return
        if opts.document == "scene":
            for scene in scenes():
                yield render_scene(scene, directions=opts.stage_directions)
            return
        play: list[str] = []
        title = ""
        for scene in scenes():
            if scene.play != title and play:
                yield "\n".join(play)
                play = []
            if not play:
                title = scene.play
                play.append(f"{title}\n")
            play.append(
                f"{scene.title()}\n\n" + render_scene(scene, heading=False, directions=opts.stage_directions)
            )
        if play:
            yield "\n".join(play)


# --- datasets read through Hugging Face `datasets`, and local files -------------------------------------


def _texts(rows: Any, text_field: str, source: str) -> Iterator[str]:
    for row in rows:
        if text_field not in row:
            raise UserError(
                f"{source}: no text field {text_field!r}; fields are {', '.join(row)} (--text-field)"
            )
        text = row[text_field]
        if isinstance(text, str) and text:
            yield text


class HubDataset(TextDataset):
    """Any Hugging Face hub dataset (or local dataset folder), streamed: path, config name, split, text field."""

    @dataclass
    class Options:
        path: str = ""
        """Hub repository id (org/name) or a local folder laid out like one (parquet files, README configs)."""
        name: str = ""
        """Config name (for example sample-10BT); empty for the default."""
        split: str = "train"
        """Split to read."""
        text_field: str = "text"
        """Column holding each document's text."""
        encoding_errors: str = "replace"
        """replace: undecodable bytes become U+FFFD, counted; strict: they stop with an error."""

    def documents(self) -> Iterator[str]:
        opts = self.options
        if not opts.path:
            raise UserError("dataset option --path is required (a hub id such as org/name, or a folder)")
        # Streaming reads the files in their listed order, without shuffling: a deterministic document order.
        rows = read_hub_rows(opts.path, opts.name, opts.split, self.decoder)
        yield from _texts(rows, opts.text_field, opts.path)


class FinewebEdu(HubDataset):
    """HuggingFaceFW/fineweb-edu, streamed from the hub (or a local folder with the same layout)."""

    @dataclass
    class Options(HubDataset.Options):
        path: str = "HuggingFaceFW/fineweb-edu"
        """Hub id, or a local folder of parquet files with FineWeb-Edu's columns and configs."""
        name: str = "sample-10BT"
        """Config: sample-10BT, sample-100BT, sample-350BT or default (everything)."""


class Files(TextDataset):
    """Local .txt, .jsonl/.json or .parquet files (paths or globs), in sorted order."""

    @dataclass
    class Options:
        paths: str = ""
        """Comma-separated files or globs (for example 'data/*.jsonl'); read in sorted order."""
        text_field: str = "text"
        """Field holding the text in .jsonl, .json and .parquet files."""
        sample_by: str = "document"
        """For .txt files: one document per file (document), per paragraph, or per line."""
        encoding_errors: str = "replace"
        """replace: undecodable bytes become U+FFFD, counted per file; strict: they stop with an error."""

    def files(self) -> list[str]:
        if not self.options.paths:
            raise UserError("dataset files: option --paths is required (files or globs, comma-separated)")
        found: list[str] = []
        for pattern in (p.strip() for p in self.options.paths.split(",") if p.strip()):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise UserError(f"{pattern}: no such file (dataset files, --paths)")
            found += matches
        for path in found:
            if Path(path).suffix.lower() not in TEXT_FORMATS:
                raise UserError(f"{path}: unsupported file type; use {', '.join(TEXT_FORMATS)}")
        return found

    def documents(self) -> Iterator[str]:
        if self.options.sample_by not in SAMPLE_BY:
            raise UserError(f"--sample-by {self.options.sample_by!r}: choose {', '.join(SAMPLE_BY)}")
        for path in self.files():
            if Path(path).suffix.lower() == ".txt":
                yield from read_texts(path, self.decoder, self.options.sample_by)
            else:
                yield from _texts(read_records(path, self.decoder), self.options.text_field, path)


BUILTIN: dict[str, type[TextDataset]] = {
    "shakespeare": Shakespeare,
    "python-stdlib": PythonStdlib,
    "fineweb-edu": FinewebEdu,
    "hf": HubDataset,
    "files": Files,
}
"""The datasets gpt2-data registers itself, by name."""
