"""The bundle: what a board needs to run compiled scripts, namely ktaprun,
ktapvm.ko (built against the board's kernel) and the images, and the one
place ktaprun's command line is spelled.

On the board the bundle is one directory: `ktap run` pushes it to
--remote-dir (deploy/), `ktap board run` and the board tests put it into the
initramfs (boards/sessions.py). Each piece keeps its name there: ktaprun,
ktapvm.ko, and each image under its own file name."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ktap.build import kmod, ktaprun
from ktap.core.targets import Target, get_target

MODULE_NAME = "ktapvm.ko"
RUNNER_NAME = "ktaprun"


class BundleError(Exception):
    pass


def session_argv(runner: str, image: str, *, module: str | None = None,
                 workload: Sequence[str] = (), options: Sequence[str] = ()) -> list[str]:
    """ktaprun's command line for a session (kmod/ktaprun/main.c):
    `RUNNER [-m MODULE] [OPTIONS] IMAGE [-- CMD ARGS]`."""
    argv = [runner] + (["-m", module] if module is not None else []) + list(options) + [image]
    # main.c refuses a workload that does not follow "--".
    return argv + (["--", *workload] if workload else [])


def serve_argv(runner: str, device: str) -> list[str]:
    """ktaprun as the serial agent: `RUNNER --serve DEV[:BAUD]`."""
    return [runner, "--serve", device]


@dataclass(frozen=True)
class BundleFile:
    name: str            # file name in the bundle directory
    local: Path
    mode: int
    sha256: str

    @classmethod
    def of(cls, name: str, local: Path, mode: int) -> "BundleFile":
        return cls(name, Path(local), mode, hashlib.sha256(Path(local).read_bytes()).hexdigest())


@dataclass
class Bundle:
    target: str
    runner: Path
    module: Path | None                                  # None: eBPF images only, no module
    images: list[Path] = field(default_factory=list)    # named on the board as here
    module_release: str = ""                             # the kernel release in its vermagic

    def files(self) -> list[BundleFile]:
        """The pieces in push order: runner, module (not for eBPF images), images."""
        module = [] if self.module is None else [BundleFile.of(MODULE_NAME, self.module, 0o644)]
        return ([BundleFile.of(RUNNER_NAME, self.runner, 0o755)] + module +
                [BundleFile.of(image.name, image, 0o644) for image in self.images])

    @staticmethod
    def path(directory: str, name: str) -> str:
        return f"{directory.rstrip('/')}/{name}"

    def command(self, directory: str, image: str, workload: Sequence[str] = (),
                options: Sequence[str] = ()) -> list[str]:
        """The ktaprun command that runs `image` with the bundle in `directory`
        (options: more of ktaprun's, such as --format json)."""
        module = None if self.module is None else self.path(directory, MODULE_NAME)
        return session_argv(self.path(directory, RUNNER_NAME), self.path(directory, image),
                            module=module, workload=workload, options=options)


def module_vermagic(ko: Path) -> str:
    """The `vermagic=` string of a .ko's .modinfo section."""
    try:
        with open(ko, "rb") as f:
            sec = ELFFile(f).get_section_by_name(".modinfo")
            data = sec.data() if sec is not None else b""
    except (ELFError, OSError) as e:
        raise BundleError(f"{ko}: not a readable kernel module ({e})") from None
    for item in data.split(b"\0"):
        if item.startswith(b"vermagic="):
            return item[9:].decode(errors="replace")
    raise BundleError(f"{ko}: no vermagic in .modinfo (not a kernel module?)")


def module_release(ko: Path) -> str:
    """The kernel release a module was built for: vermagic's first word."""
    return module_vermagic(ko).split()[0]


def make_bundle(target: Target | str, kdir: Path | None, images: dict[str, bytes] | None = None,
                workdir: Path | None = None, *, module: Path | None = None,
                runner: Path | None = None) -> Bundle:
    """Builds (or takes from the caches) ktapvm.ko against the kernel build
    tree `kdir` and ktaprun for `target`, and writes `images` ({file name:
    image bytes}) into `workdir` (a new temporary directory when not given).
    `module` and `runner` replace the builds. When every image is for the
    eBPF backend, no module is built: ktaprun runs them without one."""
    target = get_target(target)
    if module is None and (not images or any(not is_ebpf(d) for d in images.values())):
        module = kmod.build_module(target, kdir=kdir)
    if runner is None:
        runner = ktaprun.build_ktaprun(target)
    paths = []
    if images:
        workdir = Path(workdir or tempfile.mkdtemp(prefix="ktap-bundle-"))
        workdir.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (workdir / name).write_bytes(data)
            paths.append(workdir / name)
    if module is None:
        return Bundle(target.name, Path(runner), None, paths)
    return Bundle(target.name, Path(runner), Path(module), paths, module_release(module))


def is_ebpf(image: bytes) -> bool:
    """Whether a KBC image is for the eBPF backend (header byte 10, docs/bytecode.md)."""
    return len(image) > 10 and image[:4] == b"\x1bKBC" and image[10] == 1
