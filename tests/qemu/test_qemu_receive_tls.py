"""``xbzrle receive`` with TLS and admission (issue 13 §4): the library and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import wait_until
from xbzrle.errors import ParameterError, TransportError
from xbzrle.qemu import receive
from xbzrle.stream import StreamWriter
from xbzrle.transport import connect, parse_uri
from xbzrle.transport.tls import object_from_options

SRC = str(Path(__file__).resolve().parents[2] / "src")


def small_stream() -> tuple[bytes, bytes]:
    w = StreamWriter()
    page = bytes(range(256)) * 16
    data = (w.header() + w.configuration("pc") + w.section_start(2, "ram", 0, 4)
            + w.ram_blocks([("pc.ram", 4 * 4096)]) + w.eos() + w.footer(2)
            + w.section_end(2) + w.normal_page("pc.ram", 4096, page) + w.eos() + w.footer(2)
            + w.eof())
    return data, page


def send_when_listening(data: bytes, creds: Path | None, results: list[str],
                        expect_refusal: bool = False):
    def on_listening(address: str) -> None:
        def run() -> None:
            tls = None
            if creds is not None:
                tls = object_from_options(
                    f"tls-creds-x509,id=c,endpoint=client,dir={creds}").context()  # type: ignore[union-attr]
            try:
                channel = connect(parse_uri(address), tls=tls, tls_hostname="localhost")
                channel.write(data)
                verdict = None
                if expect_refusal:  # receive answers nothing but a refusal
                    try:
                        verdict = channel.read_verdict(10)  # type: ignore[union-attr]
                    except TransportError as exc:
                        verdict = f"no refusal: {exc}"
                channel.close()
                results.append("sent" if verdict is None else f"refused: {verdict}")
            except Exception as exc:  # noqa: BLE001 - the test reads what the source saw
                results.append(f"{type(exc).__name__}: {exc}")

        threading.Thread(target=run, daemon=True).start()

    return on_listening


def test_receive_over_tls_refuses_plaintext_first(tmp_path, pki):
    data, page = small_stream()
    refused: list[str] = []
    seen: list[str] = []
    server = f"tls-creds-x509,id=tls0,endpoint=server,dir={pki.server}"

    def on_listening(address: str) -> None:
        def run() -> None:
            port = int(address.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as plain:
                plain.sendall(data)
                seen.append(plain.recv(4096).decode(errors="replace"))
            send_when_listening(data, pki.client, seen)(address)

        threading.Thread(target=run, daemon=True).start()

    manifest = receive("tcp:127.0.0.1:0", tmp_path, on_listening=on_listening,
                       objects=[server], tls_creds="tls0", on_refused=refused.append)
    assert manifest["complete"]
    (block,) = manifest["blocks"]
    assert (tmp_path / block["file"]).read_bytes()[4096:8192] == page
    assert len(refused) == 1 and "source sent plaintext" in refused[0]
    assert seen[0].startswith("XBZRLE-ERROR ") and "requires TLS" in seen[0]


def test_receive_tls_options_are_checked_before_listening(tmp_path, pki):
    with pytest.raises(ParameterError, match="No TLS credentials with id 'tls0'"):
        receive("tcp:127.0.0.1:0", tmp_path, tls_creds="tls0")
    client = f"tls-creds-x509,id=tls0,endpoint=client,dir={pki.client}"
    with pytest.raises(ParameterError, match="endpoint=server"):
        receive("tcp:127.0.0.1:0", tmp_path, objects=[client], tls_creds="tls0")
    server = f"tls-creds-x509,id=tls0,endpoint=server,dir={pki.server}"
    with pytest.raises(ParameterError, match="socket migration"):
        receive("exec:cat", tmp_path, objects=[server], tls_creds="tls0")


def test_cli_receive_with_tls_and_authz_drops_a_rogue_then_takes_the_source(tmp_path, pki):
    data, page = small_stream()
    env = dict(os.environ, PYTHONPATH=SRC)
    authz = "authz-simple,id=auth0,identity=" + pki.client_dn.replace(",", ",,")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbzrle", "receive", "tcp:127.0.0.1:0", "-o", str(tmp_path / "o"),
         "--json", "--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={pki.server}",
         "--object", authz, "--tls-creds", "tls0", "--tls-authz", "auth0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert line.startswith("listening on tcp:127.0.0.1:"), line
        address = line.split()[-1]
        results: list[str] = []
        send_when_listening(data, pki.other_client, results, expect_refusal=True)(address)
        refusal = proc.stderr.readline().decode()
        assert "not authorized by 'auth0'" in refusal and pki.other_dn in refusal
        # The rogue's thread notes what it saw after receive moved on: wait for it,
        # or the source's "sent" may come first on a loaded machine.
        wait_until(lambda: len(results) == 1, 60, message="the rogue client never finished")
        send_when_listening(data, pki.client, results)(address)
        stdout, stderr = proc.communicate(timeout=60)
        wait_until(lambda: len(results) == 2, 60, message="the source never finished")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert "not authorized" in results[0] and results[1] == "sent"
    manifest = json.loads(stdout)
    assert manifest["complete"] and manifest["pages"]["normal"] == 1
