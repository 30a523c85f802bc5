"""The README's "As a library" block runs exactly as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def library_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## As a library"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block under 'As a library'"
    return match.group(1)


def test_the_library_snippet_runs_verbatim(tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(library_snippet())
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    status, transferred, xbzrle_pages = r.stdout.splitlines()[0].split()
    assert status == "completed" and int(transferred) > 0 and int(xbzrle_pages) > 0
    assert r.stdout.splitlines()[1] == "True True"  # running, with the source's RAM
    assert r.stderr == ""  # the library printed nothing of its own
