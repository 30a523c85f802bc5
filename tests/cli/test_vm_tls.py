"""``xbzrle vm --object tls-creds-x509,...`` over QMP (qemu.qmp), as one drives QEMU with TLS:
a plaintext source is refused and reported on both sides, then the TLS source completes."""

from __future__ import annotations

import asyncio

import pytest

from monitor_support import VmProcess

qmp = pytest.importorskip("qemu.qmp")

RAM = "32M"


def test_vm_processes_migrate_over_tls_and_refuse_plaintext(tmp_path, pki):
    procs: list[VmProcess] = []

    def spawn(name: str, *args: str) -> str:
        sock = str(tmp_path / f"{name}.qmp")
        vm = VmProcess(tmp_path, name, "--qmp", f"unix:{sock},server,nowait", *args)
        procs.append(vm)
        vm.wait_stderr(r"qmp on unix:")
        return sock

    dst_sock = spawn("dst", "--ram", RAM, "--workload", "loadgen", "--incoming", "defer",
                     "--xbzrle", "--object",
                     f"tls-creds-x509,id=tls0,endpoint=server,dir={pki.server}")
    plain_sock = spawn("plain", "--ram", RAM, "--workload", "loadgen", "--xbzrle")
    src_sock = spawn("src", "--ram", RAM, "--workload", "loadgen", "--xbzrle", "--object",
                     f"tls-creds-x509,id=tls0,endpoint=client,dir={pki.client}")

    async def migrate(client, port: int) -> dict:
        await client.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        while True:
            info = await client.execute("query-migrate")
            if info.get("status") in ("completed", "failed"):
                return info
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        clients = {}
        for name, sock in (("dst", dst_sock), ("plain", plain_sock), ("src", src_sock)):
            clients[name] = qmp.QMPClient(name)
            await clients[name].connect(sock)
        dst, plain, src = clients["dst"], clients["plain"], clients["src"]
        await dst.execute("migrate-set-parameters", {"tls-creds": "tls0"})
        await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        port = int((await dst.execute("query-migrate"))["socket-address"][0]["port"])

        info = await migrate(plain, port)
        assert info["status"] == "failed" and "requires TLS" in info["error-desc"]
        assert (await plain.execute("query-status"))["status"] == "running"
        procs[0].wait_stderr(r"refused the incoming connection .*source sent plaintext")

        await src.execute("migrate-set-parameters",
                          {"tls-creds": "tls0", "tls-hostname": "localhost"})
        params = await src.execute("query-migrate-parameters")
        assert params["tls-creds"] == "tls0" and params["x-stall-timeout"] == 60000
        info = await migrate(src, port)
        assert info["status"] == "completed", info
        for client in clients.values():
            await client.disconnect()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        for vm in procs:
            vm.kill()
