"""The library's types as a user's type checker sees them (``mypy --strict``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


def mypy(script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MYPYPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file",
         str(HERE / "mypy.ini"), str(HERE / script)],
        capture_output=True, text=True, timeout=600, env=env, cwd=HERE)


def test_the_package_itself_passes_mypy_strict():
    """The package's own code and its stub of the compiled core agree with each other.

    Run from the repository root (no config file there: plain ``--strict``),
    without an incremental cache, so the verdict is that of a fresh checkout.
    """
    env = dict(os.environ, MYPYPATH=str(SRC))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(SRC / "xbzrle")],
        capture_output=True, text=True, timeout=600, env=env, cwd=SRC.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_the_stub_matches_the_compiled_core():
    """``_core.pyi`` against the built module (stubtest): every name both ways, and the
    parameters of every function against the signature its docstring publishes
    (``__text_signature__``; the next test keeps every function publishing one)."""
    env = dict(os.environ, MYPYPATH=str(SRC), PYTHONPATH=str(SRC))
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "xbzrle._core", "--ignore-unused-allowlist",
         "--allowlist", str(HERE / "stubtest_allowlist.txt")],
        capture_output=True, text=True, timeout=600, env=env, cwd=SRC.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def _core_callables():
    """Every function of ``xbzrle._core`` and every method its types define, by name.

    A structseq type (LoopCounts) is skipped for its methods: they are CPython's
    (``__reduce__`` has no signature there either), not the module's.
    """
    import inspect

    from xbzrle import _core

    for name, obj in vars(_core).items():
        if inspect.isbuiltin(obj):
            yield name, obj
        elif isinstance(obj, type):
            yield name, obj
            if issubclass(obj, tuple):
                continue
            for attr, member in vars(obj).items():
                if attr != "__new__" and callable(member):
                    yield f"{name}.{attr}", member


def test_every_function_of_the_compiled_core_publishes_its_signature():
    """Without ``__text_signature__`` stubtest cannot compare a C function's parameters
    with the stub, so a wrong name, order or default there would go unnoticed."""
    import inspect

    names = []
    for name, obj in _core_callables():
        names.append(name)
        assert obj.__text_signature__, f"{name}: no signature line in its docstring"
        inspect.signature(obj)  # parses (a ValueError names the bad one)
    # The walk itself reaches the module's functions, types and methods.
    for expected in ("encode", "save_pages", "write_records", "PageCache", "PageCache.lookup",
                     "DirtyBitmap.full", "WorkloadThread.step", "GuestRam.close"):
        assert expected in names


# The errors CPython's argument parsing gives for a wrong number of arguments.
ARITY = re.compile(r"takes (no|exactly|at most|at least) (\w+ )?(positional )?argument"
                   r"|missing required argument")


def _live_callables(stack):
    """The module's functions and types, and the methods bound to a live instance of
    each type (unbound, a method would fail on its missing self first)."""
    import contextlib
    import inspect

    from xbzrle import Guest, _core

    ram = _core.GuestRam(16 * 4096)
    stack.callback(ram.close)
    instances = [_core.PageCache(1 << 16), ram, _core.DirtyBitmap(8), _core.SoftTracker(8),
                 _core.ScanTracker(ram)]
    with contextlib.suppress(OSError):  # a kernel without userfaultfd write-protect
        instances.append(_core.UffdTracker(ram))
    guest = stack.enter_context(Guest(ram="1M"))
    guest.stop()
    instances.append(guest.start_workload("idle", resume=False)._thread)
    for obj in instances:
        stack.callback(getattr(obj, "close", lambda: None))
    for name, obj in vars(_core).items():
        if inspect.isbuiltin(obj) or isinstance(obj, type):
            yield name, obj
    for obj in instances:
        for attr, member in vars(type(obj)).items():
            if callable(member) and type(member).__name__ in ("method_descriptor",
                                                                "classmethod_descriptor"):
                yield f"{type(obj).__name__}.{attr}", getattr(obj, attr)


def test_the_published_signatures_are_what_the_functions_accept():
    """Each signature against the C argument parsing: how many arguments are required
    and allowed, which ones a keyword may name, which ones it may not.  The calls
    pass placeholders, so each fails in the parsing, before doing anything."""
    import contextlib
    import inspect

    import pytest

    kinds = inspect.Parameter
    seen = set()
    with contextlib.ExitStack() as stack:
        for name, fn in _live_callables(stack):
            seen.add(name)
            params = list(inspect.signature(fn).parameters.values())
            required = [p for p in params if p.default is kinds.empty]
            with pytest.raises(TypeError, match=ARITY):
                fn(*[object()] * (len(params) + 1))
            if required:
                with pytest.raises(TypeError, match=ARITY):
                    fn(*[object()] * (len(required) - 1))
            positional = [object() for p in params if p.kind is kinds.POSITIONAL_ONLY]
            keywords = {p.name: object() for p in params
                        if p.kind is not kinds.POSITIONAL_ONLY}
            if keywords:  # accepted by name: what fails is a placeholder's value
                with pytest.raises((TypeError, ValueError)) as refused:
                    fn(*positional, **keywords)
                assert "keyword" not in str(refused.value), (name, refused.value)
                assert not ARITY.search(str(refused.value)), (name, refused.value)
            elif positional:  # positional only: a keyword is refused as such
                with pytest.raises(TypeError, match="keyword|positional argument"):
                    fn(**{params[0].name: object()})
    for expected in ("encode", "save_pages", "write_records", "GuestRam", "SoftTracker",
                     "PageCache.insert", "SoftTracker.mark", "DirtyBitmap.full",
                     "WorkloadThread.step", "ScanTracker.follow"):
        assert expected in seen


def test_positional_only_constructors_refuse_keywords():
    """GuestRam and SoftTracker publish ``(size, /)`` and ``(npages, /)``: a keyword
    is an error, not silently ignored."""
    import pytest

    from xbzrle import _core

    with pytest.raises(TypeError):
        _core.GuestRam(4096, size=4096)
    with pytest.raises(TypeError):
        _core.SoftTracker(8, npages=8)
    assert _core.SoftTracker(8).sync().count() == 0


def test_a_strict_user_script_type_checks():
    r = mypy("typed_user.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_the_types_catch_a_users_mistakes():
    r = mypy("bad_user.py")
    assert r.returncode == 1
    flagged = {int(m) for m in re.findall(r"bad_user\.py:(\d+): error", r.stdout)}
    lines = (HERE / "bad_user.py").read_text().splitlines()
    expected = {i for i, line in enumerate(lines, 1) if "# error:" in line}
    assert flagged == expected, r.stdout


def test_the_package_ships_its_type_information():
    package = SRC / "xbzrle"
    assert (package / "py.typed").is_file()
    stub = (package / "_core.pyi").read_text()
    for name in ("def encode(", "def decode(", "def decode_into(", "def encode_pages(",
                 "def decode_pages(", "class PageCache", "class GuestRam"):
        assert name in stub


def test_every_public_method_of_the_manager_says_what_it_does():
    import inspect

    from xbzrle.migration.manager import MigrationManager

    assert MigrationManager.__doc__
    for name, member in inspect.getmembers(MigrationManager):
        if name.startswith("_") and name != "__init__":
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            assert (member.__doc__ or "").strip(), name
