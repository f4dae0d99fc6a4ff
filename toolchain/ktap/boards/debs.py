"""Debian packages fetched into the ktap cache, never installed on the host.

Board kernels need packages the host's apt does not carry: other suites
(bullseye's linux-source-5.10) and other architectures (Debian's armhf and
arm64 kernel images and headers). ktap keeps a private apt state under
``$KTAP_CACHE/apt/`` with its own sources list, so nothing in /etc/apt or
/var/lib/dpkg changes and no root is needed. Downloaded .debs stay in
``$KTAP_CACHE/debs/``; unpacked trees in ``$KTAP_CACHE/unpacked/<deb stem>/``.

    index = AptIndex("amd64")                 # apt-get update on first use, refreshed daily
    deb = index.download("linux-source-5.10")
    tree = unpack(deb)                        # dpkg-deb -x, cached
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ktap.core.cache import cache_root, cached_dir, locked
from ktap.core.tools import require_tool

# The suites boards take kernels from. bullseye is Debian 11 (5.10); bookworm's
# security suite carries linux-source-6.12 and the newest 6.1 ABI.
SOURCES = """\
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bullseye main
"""
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# An index older than this is refreshed before the next lookup that misses.
REFRESH_SECONDS = 24 * 3600


class DebError(Exception):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


class AptIndex:
    """apt-get/apt-cache for one Debian architecture, against ktap's private
    state directory. One index per architecture: a mirror caught mid-sync
    fails one architecture's Packages file, and apt then drops that whole
    suite, so a shared index would lose every architecture's security updates."""

    def __init__(self, arch: str = "amd64", root: Path | None = None):
        self.arch = arch
        self.root = root or cache_root() / "apt" / arch

    def _options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "Dir::State": r / "state",
            "Dir::State::status": r / "state" / "status",
            "Dir::Cache": r / "cache",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "Debug::NoLocking": "1",
            "Acquire::Languages": "none",
        }
        if KEYRING.exists():
            opts["Dir::Etc::Trusted"] = KEYRING
        out = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _prepare(self) -> None:
        for d in ("sources.list.d", "preferences.d", "state/lists/partial",
                  "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        status = self.root / "state" / "status"
        if not status.exists():
            status.write_text("")
        sources = self.root / "sources.list"
        if not sources.exists() or sources.read_text() != SOURCES:
            sources.write_text(SOURCES)
            (self.root / "updated").unlink(missing_ok=True)

    def _run(self, tool: str, *args: str, cwd: Path | None = None,
             partial_ok: bool = False) -> str:
        exe = require_tool(tool, "apt")
        r = subprocess.run([exe, *self._options(), *args], capture_output=True, text=True,
                           cwd=cwd)
        if r.returncode != 0 and partial_ok and only_some_indexes_failed(r.stderr):
            print("ktap: warning: some Debian package indexes did not download; using the "
                  "rest:\n  " + "\n  ".join(fetch_failures(r.stderr)), file=sys.stderr, flush=True)
        elif r.returncode != 0:
            raise DebError(f"{tool} {' '.join(args)} failed: "
                           f"{(r.stderr or r.stdout).strip()[-800:]}")
        return r.stdout

    def update(self, force: bool = False) -> None:
        """apt-get update into the private state, at most once a day unless forced."""
        with locked(self.root / ".lock"):
            self._prepare()
            stamp = self.root / "updated"
            if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < REFRESH_SECONDS:
                return
            print(f"ktap: updating the Debian package index ({self.arch}; bookworm, bullseye) "
                  f"in {self.root}", file=sys.stderr, flush=True)
            # A mirror caught mid-sync fails one architecture's index; the
            # others are still good, and the packages a board needs are often there.
            self._run("apt-get", "-q", "update", partial_ok=True)
            stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))

    def updated_at(self) -> float | None:
        """When the index was last refreshed (after update()), or None: what a
        caller keys a lookup it keeps across runs by."""
        self.update()
        stamp = self.root / "updated"
        return stamp.stat().st_mtime if stamp.exists() else None

    def versions(self, name: str) -> list[str]:
        """Versions of `name` the index knows, newest first."""
        self.update()
        out = self._run("apt-cache", "madison", name)
        found = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 2 and parts[1] not in found:
                found.append(parts[1])
        return found

    def names(self, pattern: str) -> list[str]:
        """Package names matching the regular expression `pattern`, sorted."""
        self.update()
        out = self._run("apt-cache", "pkgnames")
        rx = re.compile(pattern)
        return sorted({n for n in out.split() if rx.fullmatch(n)})

    def newest(self, name: str) -> Package:
        versions = self.versions(name)
        if not versions:
            raise DebError(f"Debian package {name} ({self.arch}) is not in ktap's package "
                           f"index (sources: {self.root / 'sources.list'})")
        return Package(name, versions[0], self.arch)

    def download(self, name: str, version: str | None = None) -> Path:
        """The .deb of `name` (newest version unless given), from the cache or downloaded."""
        pkg = Package(name, version, self.arch) if version else self.newest(name)
        debs = cache_root() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        existing = deb_path(debs, pkg)
        if existing:
            return existing
        print(f"ktap: downloading {pkg.spec}", file=sys.stderr, flush=True)
        with locked(debs / ".lock"):
            existing = deb_path(debs, pkg)
            if existing:
                return existing
            self._run("apt-get", "-q", "download", pkg.spec, cwd=debs)
        found = deb_path(debs, pkg)
        if not found:
            raise DebError(f"apt-get download {pkg.spec} wrote no .deb into {debs}")
        return found


def fetch_failures(stderr: str) -> list[str]:
    return [line[len("E: Failed to fetch "):] for line in stderr.splitlines()
            if line.startswith("E: Failed to fetch ")]


def only_some_indexes_failed(stderr: str) -> bool:
    errors = [line for line in stderr.splitlines() if line.startswith("E: ")]
    return bool(errors) and all(line.startswith(("E: Failed to fetch ", "E: Some index files failed"))
                                for line in errors)


def deb_path(directory: Path, pkg: Package) -> Path | None:
    # apt-get names files name_version_arch.deb with ':' in the version escaped as %3a.
    version = pkg.version.replace(":", "%3a")
    for arch in (pkg.arch, "all"):
        p = directory / f"{pkg.name}_{version}_{arch}.deb"
        if p.exists():
            return p
    return None


def unpack(deb: Path) -> Path:
    """The files of `deb` (dpkg-deb -x), unpacked once under the cache."""
    dest = cache_root() / "unpacked" / deb.stem

    def extract(tmp: Path) -> None:
        exe = require_tool("dpkg-deb", "dpkg")
        r = subprocess.run([exe, "-x", str(deb), str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            raise DebError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")

    return cached_dir(dest, extract)
