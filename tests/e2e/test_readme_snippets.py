"""The README's runnable snippets, run as a reader would after `bash scripts/demo.sh`.

A snippet marked ``<!-- demo-snippet -->`` (the line before its fence) talks to
the demo as it is written: each of its commands runs against a live server
like the demo's, with ``$KEY`` set to a client key and the demo's address
replaced by the server's, and must exit 0 and print what its ``# ->`` comment
shows: the same fields for JSON, the same shape otherwise. Snippets with
placeholders (``{...}``, ``$ID``) stay unmarked: they illustrate.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.conftest import Account, LiveServer

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- demo-snippet -->"
FENCE = re.compile(r"^" + re.escape(MARKER) + r"[ \t]*\n+```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DEMO_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):8000\b")
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
EXPECTED = "# -> "


@dataclass(frozen=True)
class Command:
    """One command of a snippet and what the README says it prints (empty: not said)."""

    line: int
    text: str
    expected: str


def demo_snippets(readme: str) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each marked snippet."""
    return [
        (readme.count("\n", 0, match.start()) + 2, match.group(1), match.group(2))
        for match in FENCE.finditer(readme)
    ]


def commands(first_line: int, code: str) -> list[Command]:
    """The snippet's commands: ``\\`` continuations and here-documents joined; comments after
    a command that start with ``# ->`` (and the indented ``#`` lines under them) are its output."""
    lines = code.splitlines()
    found: list[Command] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        start = index
        if not line.strip() or line.lstrip().startswith("#"):
            index += 1
            continue
        body = [line]
        heredoc = HEREDOC.search(line)
        while body[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            body.append(lines[index])
        if heredoc:
            while index + 1 < len(lines) and lines[index].strip() != heredoc.group(1):
                index += 1
                body.append(lines[index])
        index += 1
        expected: list[str] = []
        if index < len(lines) and lines[index].startswith(EXPECTED):
            expected.append(lines[index][len(EXPECTED) :])
            index += 1
            while index < len(lines) and re.match(r"#\s{2,}", lines[index]):
                expected.append(lines[index][1:].strip())
                index += 1
        found.append(Command(first_line + start, "\n".join(body), " ".join(expected)))
    return found


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys_of(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_of(item)}
    return set()


def shape(text: str) -> str:
    """Text with each string and number literal replaced by a placeholder."""
    text = re.sub(r"""b?'[^']*'|b?"[^"]*\"""", "S", text.strip())
    return re.sub(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", "N", text)


def check_output(command: Command, output: str) -> None:
    if not command.expected:
        return
    fields = set(re.findall(r'"(\w+)":', command.expected))
    if fields:
        answer = json.loads(output)
        missing = fields - keys_of(answer)
        assert not missing, f"README line {command.line}: the answer lacks {sorted(missing)}: {output}"
    else:
        said = command.expected.split("  (")[0]  # a note in parentheses may follow
        assert shape(output) == shape(said), f"README line {command.line}: printed {output!r}, says {said!r}"


def test_the_marked_snippets_are_found() -> None:
    """The extraction finds the snippets, so a changed marker or fence cannot silently skip them."""
    snippets = demo_snippets((ROOT / "README.md").read_text())
    code = "\n".join(snippet for _, _, snippet in snippets)
    assert "tritonclient.http" in code
    assert "/api/v1/predict/entry" in code
    assert all(language == "bash" for _, language, _ in snippets)
    assert all(commands(line, snippet) for line, _, snippet in snippets)


def imported_modules(code: str) -> set[str]:
    """Top-level modules a snippet's Python imports."""
    found = set()
    for names in re.findall(r"^\s*import\s+(.+)$", code, re.MULTILINE):
        found |= {name.split(" as ")[0].strip().split(".")[0] for name in names.split(",")}
    found |= set(re.findall(r"^\s*from\s+(\w+)[\w.]*\s+import\b", code, re.MULTILINE))
    return found


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_demo_installs_what_the_snippets_import() -> None:
    """`bash scripts/demo.sh` installs the project with extras; the snippets import nothing else.

    (The test run has every extra installed, so running the snippets alone could not tell.)
    """
    [extras] = re.findall(
        r"^install_project\s*(\S*)\s*$", (ROOT / "scripts/demo.sh").read_text(), re.MULTILINE
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in filter(None, extras.split(",")):
        requirements += project["optional-dependencies"][extra]
    installed = {normalized(Requirement(requirement).name) for requirement in requirements}
    distributions = importlib.metadata.packages_distributions()
    code = "\n".join(snippet for _, _, snippet in demo_snippets((ROOT / "README.md").read_text()))
    modules = imported_modules(code) - set(sys.stdlib_module_names)
    assert "tritonclient" in modules
    for module in modules:
        providers = {normalized(name) for name in distributions.get(module, [])}
        assert providers & installed, f"the README imports {module}, which scripts/demo.sh does not install"


def test_the_readme_snippets_run_against_the_demo(
    live_server: LiveServer, accounts: dict[str, Account], tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.fail("the README's snippets use curl: install it (apt-get install -y curl)")
    address = live_server.url.removeprefix("http://")
    # The demo's install is the project's venv; here that is the interpreter running the tests.
    venv_bin = f"{Path(sys.executable).parent}/"
    environment = {**os.environ, "KEY": accounts["client"].api_key}
    ran = 0
    for first_line, _, code in demo_snippets((ROOT / "README.md").read_text()):
        for command in commands(first_line, code):
            script = DEMO_ADDRESS.sub(address, command.text).replace(".venv/bin/", venv_bin)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, f"README line {command.line} failed:\n{result.stderr}"
            check_output(command, result.stdout)
            ran += 1
    assert ran >= 4
