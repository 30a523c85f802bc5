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
    r = run("import xbzrle; xbzrle.encode", "c")
    assert r.returncode != 0
    assert "compiled core" in r.stderr and "XBZRLE_BACKEND=python" in r.stderr


def test_pure_modules_import_without_the_core():
    """The stream format, parameters and URIs need no compiled code (the lazy root)."""
    r = run("import xbzrle, xbzrle.stream, xbzrle.migration.params, xbzrle.transport.uri\n"
            "from xbzrle.stream import StreamWriter\n"
            "settings = xbzrle.migration.params.Settings(1 << 30)\n"
            "print(len(StreamWriter().header()), settings.capability('xbzrle'),"
            " xbzrle.transport.uri.parse_uri('tcp:127.0.0.1:4444').port)", "c")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["8", "False", "4444"]


def test_backends_name_every_component():
    """XBZRLE_BACKEND switches the codec and the cache; the page loops stay compiled."""
    r = run_with_core("import xbzrle; print(sorted(xbzrle.backends.items()))", "python")
    assert r.returncode == 0, r.stderr
    live = dict(eval(r.stdout))
    assert live["codec"] == "python" and live["cache"] == "python"
    assert live["save-loop"] == live["load-loop"] == live["guest"] == "c"


def run_with_core(code: str, backend: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XBZRLE_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)


def test_python_backend_works_without_the_core_when_asked_for():
    r = run("import xbzrle; print(xbzrle.backend, xbzrle.encode(bytes(8), b'\\1' + bytes(7)).hex(),"
            " xbzrle.PageCache(8192).slots)", "python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python", "000101", "2"]


def test_unknown_backend_is_refused():
    r = subprocess.run([sys.executable, "-c", "import xbzrle"], capture_output=True, text=True,
                       env=dict(os.environ, XBZRLE_BACKEND="fortran"), timeout=60)
    assert r.returncode != 0 and "XBZRLE_BACKEND" in r.stderr
