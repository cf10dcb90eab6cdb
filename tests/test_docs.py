"""The code blocks of README.md and docs/ run.

Python blocks run in order, one namespace per page, in a fresh folder. In
shell blocks, every ``pyromem ...`` command runs as written (through
``python -m pyromem``, in that page's folder, so later commands see the files
of earlier ones); ``pip install`` lines are what CI and
``../shared/tools/fresh-check`` run, and are not repeated here.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHELL = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def page_id(page):
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = PYTHON.findall(page.read_text())
    if not blocks:
        pytest.skip("no python code blocks")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{page.name}, python block {number}", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_pyromem_commands_run(page, tmp_path):
    commands = [
        line.split("#")[0].strip()
        for block in SHELL.findall(page.read_text())
        for line in block.splitlines()
        if line.startswith("pyromem ")
    ]
    if not commands:
        pytest.skip("no pyromem commands")
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "pyromem", *shlex.split(command)[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$", re.M)


def heading_anchors(page):
    """The anchors of a page's headings as GitHub and mkdocs make them: lower case, every
    character but letters, digits, ``_``, ``-`` and spaces dropped, spaces as ``-``, and
    ``-1``, ``-2``, ... after a heading's repeats."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    anchors, seen = set(), {}
    for heading in HEADING.findall(text):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        repeats = seen.get(slug, 0)
        seen[slug] = repeats + 1
        anchors.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_images_resolve(page):
    # every link or image to a file of the repository names one that exists, and a link to a
    # heading of a Markdown page names one it has (web addresses are not followed)
    missing = []
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        if re.match(r"^[a-z]+:", path):
            continue
        linked = page.parent / path if path else page
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            missing.append(target)
    assert not missing, f"{page_id(page)} links to files or headings that do not exist: {missing}"
