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


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_images_resolve(page):
    # every link or image to a file of the repository names one that exists (anchors and
    # web addresses are not followed)
    missing = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#")[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page_id(page)} links to files that do not exist: {missing}"
