"""Without the compiled core, importing fails loudly unless the pure-Python
backend is asked for explicitly (no silent hundredfold slowdown)."""

import os
import subprocess
import sys

BLOCK_CORE = """
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == 'xbzrle._core':
            raise ImportError('no compiled core here')
sys.meta_path.insert(0, Block())
"""


def run(code: str, backend: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XBZRLE_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", BLOCK_CORE + code], env=env,
                          capture_output=True, text=True, timeout=60)


def test_missing_core_is_an_import_error_that_says_what_to_do():
    r = run("import xbzrle", "c")
    assert r.returncode != 0
    assert "compiled core" in r.stderr and "XBZRLE_BACKEND=python" in r.stderr


def test_python_backend_works_without_the_core_when_asked_for():
    r = run("import xbzrle; print(xbzrle.backend, xbzrle.encode(bytes(8), b'\\1' + bytes(7)).hex(),"
            " xbzrle.PageCache(8192).slots)", "python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python", "000101", "2"]


def test_unknown_backend_is_refused():
    r = subprocess.run([sys.executable, "-c", "import xbzrle"], capture_output=True, text=True,
                       env=dict(os.environ, XBZRLE_BACKEND="fortran"), timeout=60)
    assert r.returncode != 0 and "XBZRLE_BACKEND" in r.stderr
