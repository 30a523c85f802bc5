"""The monitors of ``xbzrle vm``: QEMU's human console (HMP) and QMP.

:mod:`.control` is the VM as both monitors see it; :mod:`.hmp` and
:mod:`.qmp` (with :mod:`.qmp_commands`) are the two protocols without I/O,
calling :mod:`.control` and nothing below it; :mod:`.version` is the QEMU
release both claim to be;
:mod:`.server` reads and writes stdio and sockets; :mod:`.endpoint` parses
where a monitor listens.
"""
