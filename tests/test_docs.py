"""The documentation a user reads: README stays a short front door with the two commands CI
runs, every link in README and docs/ leads somewhere, every flag they name exists in the CLI,
and no page describes how files were moved between machines instead of the software."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from rtseg.cli import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, REPO / "engines" / "README.md", REPO / "bench" / "README.md",
         *sorted((REPO / "docs").glob("*.md"))]
CLI_PAGE = REPO / "docs" / "cli.md"

# .ci/run parses the test command from README; both commands are what users copy first.
MAIN_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -e . && mkdir -p out && "
                ".venv/bin/rtseg run --source bench/data/solidWhiteRight.mp4 --output "
                "out/dashcam_segmented.mp4 --json out/dashcam_run.json")
# tensorrt-stubs separately and without dependencies: it requires the full tensorrt wheel,
# whose libraries come from NVIDIA's own index; the stubs alone are what the type check needs.
TEST_COMMAND = ('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && '
                ".venv/bin/pip install --no-deps tensorrt-stubs==10.13.0.35.1 && "
                ".venv/bin/python -m pytest -q")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def command_params() -> dict[str, set[str]]:
    """Every command of the typer app → every option it accepts (both halves of --x/--no-x)."""
    group = typer.main.get_command(app)
    out = {}
    for name, command in group.commands.items():
        out[name] = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)
                     if opt.startswith("--")} | {"--help"}
    out[""] = {opt for p in group.params for opt in p.opts} | {"--help"}  # rtseg --debug
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M)}


def code_block(text: str, marker: str) -> str:
    """The first line of the code block after ``marker`` (as .ci/run reads it)."""
    after = text.split(marker, 1)[1]
    return FENCE.search(after).group(1).splitlines()[0]


def rtseg_command_lines(text: str) -> list[tuple[str, str]]:
    """(command, line) for every ``rtseg COMMAND ...`` in the page's code blocks (a line
    ending in a backslash continues), including ``python -m rtseg`` and torchrun's ``-m rtseg``."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0]
            m = re.search(r"(?:^|[\s/])(?:rtseg|-m rtseg)\s+((?:--debug\s+)?)([a-z][a-z-]*)?", line)
            if m and "bench/" not in line.split("rtseg")[0]:
                found.append((m.group(2) or "", line[m.start():]))
    return found


def test_readme_is_a_short_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference to docs/"


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    assert code_block(text, "<!-- main-command -->") == MAIN_COMMAND
    assert code_block(text, "<!-- test-command -->") == TEST_COMMAND


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            broken.append(f"{target}: leaves the repository")
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif not str(dest).startswith(str(REPO)):
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_flag_in_a_command_line_exists(page):
    params = command_params()
    unknown = []
    for command, line in rtseg_command_lines(page.read_text()):
        assert command in params, f"{page.name}: no command rtseg {command!r}: {line}"
        unknown += [f"rtseg {command} {flag}" for flag in FLAG.findall(line)
                    if flag not in params[command] | params[""]]
    assert not unknown, f"{page.name}: flags the CLI does not have: {unknown}"


def test_every_flag_of_the_cli_reference_exists_in_its_command():
    """docs/cli.md's sections, one per command: every flag named there, in a table or in
    prose, belongs to that command; and every flag of the command is documented."""
    params = command_params()
    sections = re.split(r"^## `rtseg ([a-z-]+)`$", CLI_PAGE.read_text(), flags=re.M)
    documented = {name: re.split(r"^## ", text, flags=re.M)[0]  # up to the next section
                  for name, text in zip(sections[1::2], sections[2::2])}
    assert set(documented) == set(params) - {""}, "docs/cli.md needs a section per command"
    for command, text in documented.items():
        named = set(FLAG.findall(text))
        assert named <= params[command] | params[""], \
            f"rtseg {command}: {sorted(named - params[command])} are not flags of it"
        missing = {p for p in params[command] - {"--help"} if not p.startswith("--no-")} - named
        assert not missing, f"docs/cli.md, rtseg {command}: undocumented {sorted(missing)}"


def test_readme_prose_names_only_real_flags():
    everything = set().union(*command_params().values())
    text = FENCE.sub("", README.read_text())
    unknown = {f for f in FLAG.findall(text) if f not in everything}
    assert not unknown, f"README.md names flags no command has: {sorted(unknown)}"


# How results were carried between machines is not part of the product. Allowed: pytest's
# and ONNX Runtime's sessions.
PLUMBING = re.compile(r"one call|carry|trip back|\blent\b|borrow|workplace|\bsession\b", re.I)
ALLOWED = re.compile(r'scope="session"|InferenceSession|session\.run|test session|'
                     r"the session ONNX Runtime")


def test_no_page_or_script_describes_moving_files_between_machines():
    hits = []
    for root in ("README.md", "docs", "bench", "engines", "tests"):
        base = REPO / root
        for path in [base] if base.is_file() else sorted(base.rglob("*")):
            if not path.is_file() or path == Path(__file__).resolve():
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue  # weights, videos, pictures
            for number, line in enumerate(text.splitlines(), 1):
                if PLUMBING.search(line) and not ALLOWED.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
