"""`ktap target sync` over a transport: a target profile recorded from a real
board through its own shell (ssh, adb or the serial agent), the sibling of
boards/profile.py, which records one from a QEMU board."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ktap.core.targets import Target, get_target
from ktap.deploy.transport import Transport
from ktap.symbols import profiles


# On a live board ktapw is absent: the same files come through its own shell,
# in the order profiles.collect() reads. The format files are framed like
# `ktapw dump` output, so split_dump reads both.
REMOTE_SYNC_SCRIPTS = [
    "uname -a",
    "cat /proc/kallsyms",
    "for f in " + profiles.EVENTS_ROOT + "/*/*/format; do [ -r \"$f\" ] || continue; "
    "n=$(wc -c < \"$f\"); printf '@@file %s %s\\n' \"$f\" \"$n\"; cat \"$f\"; echo; done",
    "cat /proc/config.gz",
    "cat " + profiles.FILTER_FUNCTIONS,
    "cat /proc/cmdline",
]


@dataclass
class _RemoteResult:
    """A remote command's outcome, shaped like a board command's for profiles.collect()."""
    argv: list[str]
    status: int
    stdout: bytes
    stderr: bytes
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 0


def sync_transport(transport: Transport, target: Target | str, out_dir: str | Path,
                   source: str, kdir: str | Path | None = None, files: list[str] = ()) -> Path:
    """Records a profile from a live board through a deploy transport (ssh, adb,
    serial agent). The config comes from /proc/config.gz, else from --kdir.
    files: board paths to pull too (user-space probes resolve in them)."""
    target = get_target(target)
    results = []
    for script in REMOTE_SYNC_SCRIPTS + [f"cat {shlex.quote(p)}" for p in files]:
        out, err = bytearray(), bytearray()
        status = transport.run(["sh", "-c", script], out.extend, err.extend)
        results.append(_RemoteResult(["sh", "-c", script], status, bytes(out), bytes(err)))
    build = Path(kdir) if kdir else None
    if not results[3].ok and (build is None or not (build / ".config").exists()):
        raise profiles.ProfileError(f"{source}: the kernel has no /proc/config.gz; give its "
                                    "build tree with --kdir DIR so the profile can record "
                                    "its .config")
    collected = profiles.collect(target, results, build, source)
    collected.files = profiles.pulled_files(results[len(REMOTE_SYNC_SCRIPTS):], list(files),
                                            source)
    return profiles.write_profile(collected, Path(out_dir), {"kdir": str(build)} if build else None)
