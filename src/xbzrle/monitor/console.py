"""The human monitor on a terminal: line editing, history, Tab, Ctrl-C.

When ``--monitor stdio`` runs on a terminal, this console reads the lines
instead of the plain stdio connection: GNU readline (Python's ``readline``
module) gives the editing keys, Up/Down history kept in
``~/.xbzrle_history`` (``$HOME`` is honoured) and Tab completion of commands,
``info`` subcommands, capability and parameter names.  readline rather than
prompt_toolkit: it is in the standard library, it is what QEMU's own
monitor and most shells feel like, and its line buffer is all we need to
redraw the typed line under an asynchronous message.

It runs in the main thread, so Ctrl-C lands here: during a foreground
``migrate`` it cancels the migration (as ``virsh migrate`` does); the
command waits for ``cancelled`` and gives the prompt back with the source
guest running.  At the prompt Ctrl-C just starts a fresh line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..migration.params import CAPABILITIES
from ..migration.status import MigrationStatus
from .completion import Vocabulary, complete
from .hmp import PROMPT, HmpSession, ProgressDisplay

if TYPE_CHECKING:
    from .control import VmControl

HISTORY_FILE = ".xbzrle_history"
HISTORY_LENGTH = 1000


def history_path() -> str:
    """``~/.xbzrle_history``, following ``$HOME``."""
    return os.path.join(os.path.expanduser("~"), HISTORY_FILE)


class TerminalConsole:
    """One HMP console on the process's terminal (stdin and stdout are a tty)."""

    def __init__(self, control: VmControl, banner: str, history: str | None = None,
                 display: Callable[[], ProgressDisplay] | None = None) -> None:
        self.control = control
        self.banner = banner
        self.history = history or history_path()
        self._out_lock = threading.RLock()  # the Ctrl-C handler may write mid-write
        self._at_prompt = False
        self._cancelling = False
        self.session = HmpSession(control, self._write, display)
        self._readline: Any = None

    # -- output -------------------------------------------------------------
    def _write(self, text: str) -> None:
        with self._out_lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    def notify(self, text: str) -> None:
        """Print a message from another thread; redraw the prompt and what was typed."""
        with self._out_lock:
            if self._at_prompt and self._readline is not None:
                typed = self._readline.get_line_buffer()
                sys.stdout.write(f"\r\x1b[K{text}\n{PROMPT}{typed}")
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def _on_status(self, status: MigrationStatus) -> None:
        mig = self.control.migration
        if status == MigrationStatus.FAILED and self._at_prompt and mig is not None:
            self.notify(f"Error: migration failed: {mig.error or 'unknown error'}")

    # -- readline -----------------------------------------------------------
    def vocabulary(self) -> Vocabulary:
        s = self.session
        return Vocabulary(
            commands=[n for n in s.commands if n not in s.legacy],
            info=[n for n in s.info if n not in s.legacy_info],
            capabilities=list(CAPABILITIES),
            parameters=list(self.control.query_parameters()))

    def _setup_readline(self) -> None:
        import readline

        self._readline = readline
        readline.set_history_length(HISTORY_LENGTH)
        with contextlib.suppress(OSError):
            readline.read_history_file(self.history)
        vocabulary = self.vocabulary()
        matches: list[str] = []

        def completer(text: str, state: int) -> str | None:
            nonlocal matches
            if state == 0:
                line = readline.get_line_buffer()[:readline.get_endidx()]
                matches = complete(line, vocabulary)
                if len(matches) == 1:  # a whole word: go on to the next one
                    matches = [matches[0] + " "]
            return matches[state] if state < len(matches) else None

        readline.set_completer_delims(" \t")
        readline.set_completer(completer)
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
            # One Tab completes the common part and lists the candidates, as QEMU's
            # monitor does (and a second Tab is not needed to see them).
            readline.parse_and_bind("set show-all-if-ambiguous on")

    def _remember(self, line: str) -> None:
        """Keep the line in the history file now: a killed process loses nothing."""
        if not line.strip() or self._readline is None:
            return
        with contextlib.suppress(OSError):
            if not os.path.exists(self.history):
                self._readline.write_history_file(self.history)
            else:
                self._readline.append_history_file(1, self.history)

    # -- the loop -------------------------------------------------------------
    def run(self) -> None:
        """Read and run lines until ``quit`` or end of input (Ctrl-D)."""
        self._setup_readline()
        self.control.manager.add_status_listener(self._on_status)
        self._write(self.banner + "\n")
        while not self.control.quit_requested.is_set():
            try:
                self._at_prompt = True
                line = input(PROMPT)
            except EOFError:
                self._write("\n")
                self.control.request_quit()
                break
            except KeyboardInterrupt:
                self._write("\n")  # Ctrl-C at the prompt: a fresh line, as a shell
                continue
            finally:
                self._at_prompt = False
            self._remember(line)
            previous = signal.signal(signal.SIGINT, self._on_interrupt)
            try:
                self.session.execute(line)
            finally:
                signal.signal(signal.SIGINT, previous)

    def _on_interrupt(self, signum: int, frame: object) -> None:
        """Ctrl-C while a command runs: a foreground migration is cancelled.

        A handler that returns instead of raising KeyboardInterrupt: the
        command goes on waiting and reports ``migration cancelled`` itself.
        Raising would interrupt ``Thread.join`` mid-wait, which on Python 3.11
        marks the migration thread as finished while it still runs.  The
        cancel itself runs in a thread of its own: the handler may have
        interrupted this thread inside a lock the cancel needs.
        """
        mig = self.control.migration
        if mig is None or mig.incoming or not mig.status.is_running or self._cancelling:
            return
        self._cancelling = True
        self._write("\ncancelling the migration (Ctrl-C)\n")

        def cancel() -> None:
            try:
                self.control.cancel()
            finally:
                self._cancelling = False

        threading.Thread(target=cancel, name="console-cancel", daemon=True).start()
