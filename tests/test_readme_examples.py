"""Every bash and python example in every README runs here, or is named in ``NOT_HERE`` (a GPU, the Hugging
Face hub, a cluster) with its commands and flags still checked against the CLI.

Bash examples run command by command, as written, in a sandbox: a copy of what the README's examples name
(``NEEDS``: tiny runs trained once by ``gpt2 train --preset tiny`` and ``gpt2 sft --preset tiny``, a local Alpaca
file, text notes, the local lm-eval task gpt2-eval ships) with ``gpt2`` on PATH and the edits in ``SUBSTITUTIONS`` (fewer steps, a
free port, local paths for the hub's). ``gpt2 serve`` runs in the background until the README's other examples
have used it. Python examples run as scripts there; one that implements a hook is installed as a package with a
``gpt2`` entry point and used by the command in ``PLUGIN_USE``.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import typer
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", *sorted(ROOT.glob("packages/*/README.md"))]
BIN = Path(sys.executable).parent
TIMEOUT = 600  # seconds per command: a minute's work can take several on a loaded 2-core machine

NOT_HERE = {
    # Whole examples, by README and a line they contain.
    (
        "README.md",
        "--preset gpt2-124m-fineweb\n",
    ): "the GPT-2 124M recipe: the FineWeb-Edu hub data and 8 GPUs",
    ("README.md", "#SBATCH"): "a SLURM cluster of GPU nodes",
    ("README.md", "--parallel fsdp"): "8 GPUs",
    ("packages/gpt2-train/README.md", "class SFTConfig"): "a sketch: the reader supplies the data sources",
    ("packages/gpt2-eval/README.md", "lm_eval.simple_evaluate"): "lm-eval downloads arc_easy from the hub",
}
"""Examples that cannot run on this machine, and why; their commands' flags and their imports are checked."""

NOT_HERE_COMMANDS = {
    r"^uv sync": "the set-up; .ci/run runs it on a clean clone",
    r"^uv run pytest": "the suite itself; .ci/run runs it",
    r"^pip install": "installs into the environment (tests/test_layering.py installs gpt2-core alone, offline)",
    r"^wandb (login|sync)": "talks to wandb's servers",
    r"--logger wandb --project": "logs to wandb's servers (the offline example runs)",
    r"--nproc-per-node=8": "8 GPUs",
    r"--device cuda": "a CUDA GPU",
    r"--dataset fineweb-edu": "downloads FineWeb-Edu from the hub",
    r"--path (vicgalle|databricks|HuggingFaceH4)/": "downloads the instructions from the hub",
    r"--tasks (hellaswag|arc_easy)": "lm-eval downloads the task from the hub",
    r"gpt2 tensorboard": "TensorBoard's server runs until stopped",
    r"--host 0\.0\.0\.0": "listens on every interface (the example before it serves on localhost)",
}
"""Commands inside runnable examples that cannot run here, by a pattern of the command."""

SUBSTITUTIONS = [
    (r"^uv run ", ""),  # the test runs in the synced environment already
    (r"--max-steps \d+", "--max-steps 20"),
    (r"^(?!.*--max-steps)(.*\bgpt2 (train|sft) [^|#]*?)\s*(#.*)?$", r"\1 --max-steps 10"),
    (r"(\bgpt2 train [^|#]*?)\s*(#.*)?$", r"\1 --warmup-steps 2 --eval-batches 2"),
    (r"(\bgpt2 sft [^|#]*?)\s*(#.*)?$", r"\1 --warmup-steps 1 --eval-batches 1 --total-batch-tokens 2048"),
    (r"step_00001000", "step_00000010"),  # the sandbox's runs/tiny has 10 steps
    (r"~/models/openai-gpt2", "export/tiny-hf"),  # the Hugging Face directory exported just before
    (r"(gpt2 serve [^|#]*?)\s*(#.*)?$", r"\1 --port {port}"),
    (r"127\.0\.0\.1:8000", "127.0.0.1:{port}"),
    (r"^curl ", "curl --fail-with-body "),  # curl exits 0 on an HTTP error; a 404 must fail the example
]
"""(pattern, replacement) applied in order to every command and python example that runs. Flags appended
last win (click keeps an option's last value), so the example's own flags stay as written."""

NEEDS = {
    "README.md": [],
    "packages/gpt2/README.md": [],
    "packages/gpt2-cli/README.md": ["runs/tiny", "runs/sft"],
    "packages/gpt2-core/README.md": ["runs/sft"],
    "packages/gpt2-data/README.md": ["notes"],
    "packages/gpt2-eval/README.md": ["runs/tiny", "my_tasks"],
    "packages/gpt2-export/README.md": ["runs/tiny"],
    "packages/gpt2-serve/README.md": ["runs/sft"],
    "packages/gpt2-sft/README.md": ["runs/tiny", "alpaca.jsonl"],
    "packages/gpt2-train/README.md": ["runs/tiny-sft"],
    "packages/gpt2-wandb/README.md": [],
}
"""What each README's examples use and do not make themselves, copied from the prepared sandbox."""

PLUGIN_USE = {
    "register_commands": ("gpt2 hello --name README", "hello README"),
    "register_exporters": (
        "gpt2 export --format npz --model runs/tiny --out export/npz",
        "export/npz/weights.npz",
    ),
    "register_loggers": (
        "gpt2 train --preset tiny --run-dir runs/my-logger --logger my-logger",
        "runs/my-logger/latest",
    ),
}
"""hook -> (a command that uses the example's plugin, a text it prints or a file it writes)."""


@dataclass(frozen=True)
class Example:
    """A fenced ``bash`` or ``python`` block of a README."""

    readme: str
    line: int
    lang: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.readme}:{self.line}"

    def not_here(self) -> str | None:
        for (readme, text), reason in NOT_HERE.items():
            if readme == self.readme and text in self.code:
                return reason
        return None


def examples(readme: Path) -> list[Example]:
    found, lang, start, lines = [], None, 0, []
    for number, line in enumerate(readme.read_text().splitlines(), 1):
        if lang is None and line.startswith("```"):
            lang, start, lines = line[3:].strip(), number, []
        elif lang is not None and line.startswith("```"):
            if lang in ("bash", "python"):
                found.append(Example(str(readme.relative_to(ROOT)), start, lang, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    return found


ALL = [e for r in READMES for e in examples(r)]


def commands(code: str) -> list[str]:
    """The commands of a bash example: continuation lines joined, comment lines dropped, ``&&`` chains split."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        if shlex.split(line, comments=True):
            out += [part.strip() for part in line.split(" && ")]
    return out


def command_not_here(command: str) -> str | None:
    return next((why for pattern, why in NOT_HERE_COMMANDS.items() if re.search(pattern, command)), None)


def substitute(text: str, port: int) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text.replace("{port}", str(port))


# ---- flags: every gpt2 and torchrun command of every example, runnable or not ----


def launched(command: str) -> tuple[list[str], list[str]] | None:
    """(torchrun's own arguments, gpt2's arguments) of a command that runs gpt2; None for other programs."""
    tokens = shlex.split(command, comments=True)
    for program in ("torchrun", "gpt2"):
        if program in tokens:
            at = tokens.index(program)
            rest = tokens[at + 1 :]
            if "|" in rest:
                rest = rest[: rest.index("|")]
            if program == "gpt2":
                return [], rest
            module = rest.index("-m")
            assert rest[module + 1] == "gpt2_cli", command
            return rest[:module], rest[module + 2 :]
    return None


def check_flags(command: str) -> None:
    got = launched(command)
    if got is None:
        return
    torchrun_args, args = got
    if torchrun_args:
        from torch.distributed.run import get_args_parser

        parser = get_args_parser()
        _, unknown = parser.parse_known_args([*torchrun_args, "script.py"])
        flags = [a.split("=")[0] for a in torchrun_args if a.startswith("--")]
        unknown += [f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", parser.format_help())]
        assert not unknown, f"{command}: torchrun has no {unknown}"  # nor an abbreviation argparse would take
    from gpt2_cli.main import build_app

    cmd = typer.main.get_command(build_app())
    path = []
    while (
        hasattr(cmd, "list_commands") and args
    ):  # a group: let it route (gpt2 sft ARGS is gpt2 sft train ARGS)
        ctx = cmd.make_context("gpt2", list(args), resilient_parsing=True)
        args = [*ctx._protected_args, *ctx.args]  # click keeps the sub-command it parsed in _protected_args
        if not args:
            return  # only the group's own options (gpt2 --version), parsed above
        sub = cmd.get_command(ctx, args[0])
        assert sub is not None, f"{command}: no command `gpt2 {' '.join([*path, args[0]])}`"
        path.append(args.pop(0))
        cmd = sub
    options = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    extra, i = [], 0
    while i < len(args):
        flag = args[i].split("=")[0]
        if flag.startswith("--") and flag not in options:
            extra.append(args[i])
            if "=" not in args[i] and i + 1 < len(args) and not args[i + 1].startswith("--"):
                extra.append(args[i + 1])
                i += 1
        elif flag in options and not getattr(options[flag], "is_flag", False) and "=" not in args[i]:
            i += 1  # the option's value
        i += 1
    if extra:
        # Dataset options follow --dataset as --field value: checked against that dataset's Options.
        assert cmd.context_settings.get("ignore_unknown_options"), (
            f"{command}: gpt2 {' '.join(path)} has no {extra}"
        )
        from gpt2_data.dataset_options import parse_dataset_options

        dataset = args[args.index("--dataset") + 1] if "--dataset" in args else options["--dataset"].default
        parse_dataset_options(dataset, extra)


@pytest.mark.parametrize("example", [e for e in ALL if e.lang == "bash"], ids=lambda e: e.name)
def test_every_command_and_flag_exists(example: Example) -> None:
    for command in commands(example.code):
        check_flags(command)
        if command.startswith("pip install "):
            target = shlex.split(command)[2]
            package, _, extras = target.partition("[")
            pyproject = (ROOT / package / "pyproject.toml").read_text()
            assert all(f"\n{e} = " in pyproject for e in extras.rstrip("]").split(",") if e), command


@pytest.mark.parametrize("example", [e for e in ALL if e.lang == "python"], ids=lambda e: e.name)
def test_every_python_example_compiles_and_its_imports_exist(example: Example) -> None:
    tree = ast.parse(example.code, example.name)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=imports, type_ignores=[]), example.name, "exec"), {})


def test_not_here_names_existing_examples_and_commands() -> None:
    for readme, text in NOT_HERE:
        assert sum(e.readme == readme and text in e.code for e in ALL) == 1, (readme, text)
    every_command = [c for e in ALL if e.lang == "bash" for c in commands(e.code)]
    for pattern in NOT_HERE_COMMANDS:
        assert any(re.search(pattern, c) for c in every_command), (
            f"NOT_HERE_COMMANDS: {pattern} matches nothing"
        )


@pytest.mark.parametrize("example", [e for e in ALL if e.not_here()], ids=lambda e: e.name)
def test_not_runnable_here(example: Example) -> None:
    pytest.skip(f"{example.name}: {example.not_here()} (its flags and imports are checked)")


# ---- running them ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: str, cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, (
        f"{command}\nexit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def environment(cache: Path, *paths: Path) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "GPT2_CACHE_DIR": str(cache)}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return env


ALPACA = [
    {
        "instruction": f"Name {n} colors.",
        "input": "",
        "output": ", ".join(["red", "green", "blue", "gold"][:n]),
    }
    for n in (1, 2, 3, 4)
] * 10
NOTES = {"a.txt": "To be, or not to be, that is the question.\n", "b.txt": "All the world's a stage.\n"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Once for the module: what ``NEEDS`` names, made as the READMEs make them (``GPT2_CACHE_DIR`` is
    ``cache/`` beside them, shared: the Shakespeare shards are tokenized once)."""
    import json

    base = tmp_path_factory.mktemp("readme")
    env = environment(base / "cache")
    run(substitute("gpt2 train --preset tiny --run-dir runs/tiny", 0), base, env)
    run(substitute("gpt2 sft --preset tiny --from runs/tiny/latest", 0), base, env)
    shutil.copytree(base / "runs" / "tiny-sft", base / "runs" / "sft", symlinks=True)
    (base / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    (base / "notes").mkdir()
    for name, text in NOTES.items():
        (base / "notes" / name).write_text(text)
    shutil.copytree(ROOT / "packages" / "gpt2-eval" / "docs" / "my_tasks", base / "my_tasks")  # as shipped
    return base


@dataclass
class Sandbox:
    dir: Path
    env: dict[str, str]
    port: int
    servers: list[subprocess.Popen]

    def command(self, command: str) -> None:
        command = substitute(command, self.port)
        if re.search(r"\bgpt2 serve\b", command):
            self.serve(command)
        elif re.search(r"\bgpt2 chat\b", command) and "|" not in command:
            run(command, self.dir, self.env, stdin="Hi\n")
        else:
            run(command, self.dir, self.env)

    def serve(self, command: str) -> None:
        """Start the server and wait until it answers, or fail with its output if it exits first."""
        log = open(self.dir / "serve.log", "w")  # noqa: SIM115 (closed with the process)
        server = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.servers.append(server)

        def up() -> bool:
            assert server.poll() is None, (self.dir / "serve.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, f"{command} to answer /health", timeout=TIMEOUT)

    def python(self, example: Example) -> None:
        code = substitute(example.code, self.port)
        hook = re.search(r"def (register_\w+)\(", code)
        if hook is None:
            (self.dir / "example.py").write_text(code)
            run(f"{shlex.quote(sys.executable)} example.py", self.dir, self.env)
            return
        site = self.dir / "site"
        site.mkdir(exist_ok=True)
        (site / "readme_plugin.py").write_text(code)
        dist = site / "readme_plugin-0.1.dist-info"  # what pip install gives importlib.metadata
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: readme-plugin\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text("[gpt2]\nreadme-plugin = readme_plugin\n")
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), self.env["PYTHONPATH"]])
        use, shows = PLUGIN_USE[hook.group(1)]
        printed = run(substitute(use, self.port), self.dir, self.env)
        assert shows in printed or (self.dir / shows).exists(), f"{use}: neither printed nor wrote {shows!r}"


@pytest.fixture
def sandbox(prepared: Path, tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path / "work", environment(prepared / "cache"), free_port(), [])
    box.dir.mkdir()
    yield box
    for server in box.servers:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=TIMEOUT)


@pytest.mark.slow
@pytest.mark.parametrize("readme", [str(r.relative_to(ROOT)) for r in READMES])
def test_readme_examples_run(readme: str, prepared: Path, sandbox: Sandbox) -> None:
    """The README's runnable examples, in order, in a sandbox holding what they use."""
    for need in NEEDS[readme]:
        source, target = prepared / need, sandbox.dir / need
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy(source, target)
    for example in examples(ROOT / readme):
        if example.not_here():
            continue
        if example.lang == "python":
            sandbox.python(example)
            continue
        for command in commands(example.code):
            if not command_not_here(command):
                sandbox.command(command)
