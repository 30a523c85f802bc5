"""Migration capabilities and parameters, with QEMU's names and checks.

Pure logic: no I/O, no threads.  The monitors (HMP, QMP) and the CLI all go
through :class:`Settings`, so every path refuses the same values with the
same message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ParameterError
from ..sizes import PAGE_SIZE

MiB = 1 << 20

#: Capabilities this implementation supports, in QEMU's spelling, and their defaults.
CAPABILITY_DEFAULTS: dict[str, bool] = {
    "xbzrle": False,
    "events": False,
    # Ours (an "x-" name, as QEMU marks experimental ones): the source sends a
    # digest of all RAM after the last pages and the destination refuses to run
    # a guest whose RAM differs.  QEMU knows no such section and rejects the
    # stream, so a user turns it off on both sides to migrate with a real QEMU.
    "x-ram-digest": True,
    # Ours: with x-ram-digest, each side takes its digest by reading all of its
    # RAM once the pages are in (the source after the guest stopped) instead
    # of from the per-page table its save or load loop kept.  Slower, on the
    # downtime path, but the source's full read also catches a dirty page the
    # tracking lost (the table only knows what was sent).
    "x-ram-digest-full": False,
    # auto-converge: throttle the guest when it dirties faster than the link.
    "auto-converge": False,
}
CAPABILITIES = tuple(CAPABILITY_DEFAULTS)

#: QEMU's defaults: 64 MiB cache, 128 MiB/s, 300 ms.
DEFAULT_CACHE_SIZE = 64 * MiB
DEFAULT_MAX_BANDWIDTH = 128 * MiB
DEFAULT_DOWNTIME_LIMIT_MS = 300
MAX_DOWNTIME_LIMIT_MS = 2_000_000
MAX_BANDWIDTH_LIMIT = (1 << 64) // 1000 - 1
#: Who may migrate: an incoming connection gets this long for its TLS handshake
#: and stream header; a source whose destination accepts no byte this long fails.
DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
DEFAULT_STALL_TIMEOUT_MS = 60_000
MAX_TIMEOUT_MS = 24 * 3600 * 1000
SECURITY_PARAMETERS = ("tls-creds", "tls-hostname", "tls-authz", "x-handshake-timeout",
                       "x-stall-timeout")


def check_security_parameter(name: str, value: object) -> str | int:
    """``tls-*`` take a string (an object id, a host name); the timeouts milliseconds."""
    if name.startswith("tls-"):
        if not isinstance(value, str):
            raise ParameterError(f"Parameter '{name}' expects a string, got {value!r}")
        return value
    ms = _as_int(name, value)
    if not 0 <= ms <= MAX_TIMEOUT_MS:
        raise ParameterError(f"Parameter '{name}' expects an integer in the range of 0 to "
                             f"{MAX_TIMEOUT_MS} ms (0 waits forever)")
    return ms


def pow2floor(value: int) -> int:
    """Largest power of two <= value (value >= 1): the seed's cache rounding."""
    return 1 << (value.bit_length() - 1)


def is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"Parameter '{name}' expects an integer, got {value!r}")
    return value


def _as_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"Parameter '{name}' expects a boolean, got {value!r}")
    return value


# -- convergence: auto-converge (QEMU's parameters, defaults, ranges and texts)
# -- and our x- parameters --------------------------------------------------
#: name -> (type, default); the checks below run on the merged values, as
#: QEMU's migrate_params_check does, so max-cpu-throttle is judged against
#: the cpu-throttle-initial it will be used with.
CONVERGE_PARAMETERS: dict[str, tuple[type, object]] = {
    "throttle_trigger_threshold": (int, 50),
    "cpu_throttle_initial": (int, 20),
    "cpu_throttle_increment": (int, 10),
    "cpu_throttle_tailslow": (bool, False),
    "max_cpu_throttle": (int, 99),
    # Ours: with XBZRLE on, trigger on raw dirty bytes as QEMU does instead
    # of on what the dirty pages cost on the wire (for comparisons).
    "x_throttle_raw_bytes": (bool, False),
    # Ours: a page whose delta overflowed skips the encoder for a while.
    "x_overflow_backoff": (bool, True),
}


def check_converge_parameters(p: Parameters) -> None:
    """QEMU's range checks and texts (``Parameter '%s' expects %s``), in QEMU's order."""
    if not 1 <= p.throttle_trigger_threshold <= 100:
        raise ParameterError("Parameter 'throttle_trigger_threshold' expects "
                             "an integer in the range of 1 to 100")
    if not 1 <= p.cpu_throttle_initial <= 99:
        raise ParameterError("Parameter 'cpu_throttle_initial' expects "
                             "an integer in the range of 1 to 99")
    if not 1 <= p.cpu_throttle_increment <= 99:
        raise ParameterError("Parameter 'cpu_throttle_increment' expects "
                             "an integer in the range of 1 to 99")
    if not p.cpu_throttle_initial <= p.max_cpu_throttle <= 99:
        raise ParameterError("Parameter 'max_cpu_throttle' expects "
                             "an integer in the range of cpu_throttle_initial to 99")


@dataclass
class Parameters:
    """``query-migrate-parameters`` values we implement (units as QEMU's)."""

    xbzrle_cache_size: int = DEFAULT_CACHE_SIZE  # bytes
    max_bandwidth: int = DEFAULT_MAX_BANDWIDTH  # bytes per second, 0 = unlimited
    downtime_limit: int = DEFAULT_DOWNTIME_LIMIT_MS  # milliseconds
    # auto-converge (see CONVERGE_PARAMETERS)
    throttle_trigger_threshold: int = 50  # percent of the bytes transferred
    cpu_throttle_initial: int = 20  # percent
    cpu_throttle_increment: int = 10  # percent
    cpu_throttle_tailslow: bool = False
    max_cpu_throttle: int = 99  # percent
    x_throttle_raw_bytes: bool = False
    x_overflow_backoff: bool = True
    # -- who may migrate (issue 13 §4): TLS objects by id, and two timeouts --
    tls_creds: str = ""  # id of a tls-creds-x509 object; "" = plain channel
    tls_hostname: str = ""  # name the destination's certificate must carry
    tls_authz: str = ""  # id of an authz-list/authz-simple object (destination)
    x_handshake_timeout: int = DEFAULT_HANDSHAKE_TIMEOUT_MS  # ms; 0 = wait forever
    x_stall_timeout: int = DEFAULT_STALL_TIMEOUT_MS  # ms; 0 = wait forever

    def to_qmp(self) -> dict[str, int | bool | str]:
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}


@dataclass
class Settings:
    """Capabilities and parameters of one process, checked on every change.

    ``ram_size`` bounds the cache size (a cache larger than guest RAM is
    refused, as QEMU does).
    """

    ram_size: int
    capabilities: dict[str, bool] = field(
        default_factory=lambda: dict(CAPABILITY_DEFAULTS)
    )
    parameters: Parameters = field(default_factory=Parameters)

    # -- capabilities ------------------------------------------------------
    def set_capability(self, name: str, state: bool) -> None:
        self.set_capabilities([(name, state)])

    def set_capabilities(self, wanted: list[tuple[str, bool]]) -> None:
        """``migrate-set-capabilities``: every name and state is checked before any is set."""
        for name, state in wanted:
            if name not in self.capabilities:
                raise ParameterError(
                    f"Parameter 'capability' does not accept value '{name}' "
                    f"(supported: {', '.join(CAPABILITIES)})"
                )
            if not isinstance(state, bool):
                raise ParameterError(f"Parameter 'state' expects a boolean, got {state!r}")
        for name, state in wanted:
            self.capabilities[name] = state

    def capability(self, name: str) -> bool:
        return self.capabilities[name]

    def query_capabilities(self) -> list[dict[str, object]]:
        return [{"capability": k, "state": v} for k, v in self.capabilities.items()]

    # -- parameters --------------------------------------------------------
    def check_cache_size(self, value: object, *, round_down: bool) -> int:
        """Validate a cache size; the seed's commands round down, the parameter refuses."""
        size = _as_int("xbzrle-cache-size", value)
        if size < PAGE_SIZE:
            raise ParameterError(
                f"Parameter 'xbzrle-cache-size' expects a power of two no less than the "
                f"target page size ({PAGE_SIZE} bytes), got {size}"
            )
        if size > self.ram_size:
            raise ParameterError(
                f"Parameter 'xbzrle-cache-size' expects a size no larger than guest RAM "
                f"({self.ram_size} bytes), got {size}"
            )
        if not is_pow2(size):
            if not round_down:
                raise ParameterError(
                    "Parameter 'xbzrle-cache-size' expects a power of two no less than the "
                    f"target page size, got {size}"
                )
            size = pow2floor(size)
        return size

    def set_cache_size(self, value: object) -> int:
        """The seed's ``migrate_set_cache_size``: a size that is not a power of two
        is rounded down (``migrate-set-parameters`` refuses it instead)."""
        size = self.check_cache_size(value, round_down=True)
        self.parameters = dataclasses.replace(self.parameters, xbzrle_cache_size=size)
        return size

    @staticmethod
    def downtime_seconds_to_ms(seconds: object) -> int:
        """The old ``migrate_set_downtime`` value (seconds, fractions allowed) in ms."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ParameterError(f"invalid downtime '{seconds}': expected seconds")
        if not 0 <= seconds <= MAX_DOWNTIME_LIMIT_MS // 1000:
            raise ParameterError(
                "Parameter 'downtime_limit' expects an integer in the range of 0 to "
                f"{MAX_DOWNTIME_LIMIT_MS // 1000} seconds")
        return int(seconds * 1000)

    def set_parameters(self, **values: object) -> None:
        """Apply ``migrate-set-parameters`` atomically: all values or none."""
        updated = dataclasses.replace(self.parameters)
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "xbzrle_cache_size":
                updated.xbzrle_cache_size = self.check_cache_size(value, round_down=False)
            elif name == "max_bandwidth":
                bw = _as_int("max-bandwidth", value)
                if not 0 <= bw <= MAX_BANDWIDTH_LIMIT:
                    raise ParameterError(
                        "Parameter 'max-bandwidth' expects an integer in the range of 0 to "
                        f"{MAX_BANDWIDTH_LIMIT} bytes/second"
                    )
                updated.max_bandwidth = bw
            elif name == "downtime_limit":
                ms = _as_int("downtime-limit", value)
                if not 0 <= ms <= MAX_DOWNTIME_LIMIT_MS:
                    raise ParameterError(
                        "Parameter 'downtime-limit' expects an integer in the range of 0 to "
                        f"{MAX_DOWNTIME_LIMIT_MS // 1000} seconds"
                    )
                updated.downtime_limit = ms
            elif key.replace("_", "-") in SECURITY_PARAMETERS:
                setattr(updated, name, check_security_parameter(key.replace("_", "-"), value))
            elif name in CONVERGE_PARAMETERS:
                kind = CONVERGE_PARAMETERS[name][0]
                check = _as_bool if kind is bool else _as_int
                setattr(updated, name, check(key.replace("_", "-"), value))
            else:
                raise ParameterError(f"Parameter '{key}' is unexpected")
        check_converge_parameters(updated)
        self.parameters = updated
