"""A vCenter simulator (govmomi's vcsim) for tests and benchmarks, built by the project itself.

Debian's ``golang-github-vmware-govmomi-dev`` ships the simulator library but no command;
``main.go`` here is a small main over it. ``build()`` compiles it offline (``GO111MODULE=off``,
``GOPATH=/usr/share/gocode``) once into ``~/.cache/coriolis/vcsim/<sha256 of main.go>/vcsim``;
``start()`` runs it on a loopback port with a self-signed certificate and a login of its own.
Facts about what vcsim serves and lacks: ``../shared/reference/platform-backends.md``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from coriolis.transfer.tls import ensure_certificate

SOURCE = Path(__file__).with_name("main.go")
GOPATH = "/usr/share/gocode"
CACHE = Path(os.environ.get("CORIOLIS_CACHE", Path.home() / ".cache" / "coriolis")) / "vcsim"


class VcsimUnavailable(RuntimeError):
    """Go or Debian's govmomi library is missing, or the build failed."""


def binary_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return CACHE / digest / "vcsim"


def build() -> Path:
    """The vcsim binary, compiled on first use (~25-50 s on two cores) and cached by the
    source hash. ``VcsimUnavailable`` names what is missing (``./dev setup`` installs it)."""
    target = binary_path()
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise VcsimUnavailable("the 'go' command is missing (apt-get install golang-go)")
    if not Path(GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise VcsimUnavailable("govmomi's simulator library is missing "
                               "(apt-get install golang-github-vmware-govmomi-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        shutil.copy(SOURCE, Path(work, "main.go"))
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH,
               "GOCACHE": str(CACHE / "gocache"), "GOFLAGS": ""}
        done = subprocess.run(
            ["nice", "go", "build", "-p", "1", "-o", str(Path(work, "vcsim")), "main.go"],
            cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise VcsimUnavailable(f"building vcsim failed: {done.stderr.strip()[-2000:]}")
        os.replace(Path(work, "vcsim"), target)
    return target


@dataclass
class Vcsim:
    """A running simulator: ``host``, ``port``, ``username``, ``password``, the PEM
    certificate file it serves (``cert_file``) and its SHA-256 ``fingerprint``."""

    host: str
    port: int
    username: str
    password: str
    cert_file: Path
    fingerprint: str
    process: subprocess.Popen[str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/sdk"

    def connection_info(self, **extra: object) -> dict[str, object]:
        """The seed's VMware connection info for this simulator (untrusted certificate
        allowed unless ``extra`` says otherwise)."""
        return {"host": self.host, "port": self.port, "username": self.username,
                "password": self.password, "allow_untrusted": True, **extra}

    def stop(self) -> None:
        if self.process.poll() is None:
            stdin: IO[str] | None = self.process.stdin
            if stdin is not None:
                stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(folder: Path, *, username: str = "coriolis", password: str | None = None,
          vms: int = 2) -> Vcsim:
    """Start vcsim on 127.0.0.1 (a free port) with a certificate made in ``folder``; it runs
    until ``stop()`` (or until this process's end closes its standard input)."""
    binary = build()
    password = password or hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    cert = ensure_certificate(folder, ["127.0.0.1", "localhost"])
    proc = subprocess.Popen(
        [str(binary), "-listen", "127.0.0.1:0", "-user", username, "-pass", password,
         "-cert", str(cert.cert_file), "-key", str(cert.key_file), "-vm", str(vms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=folder)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("URL "):
        proc.kill()
        _, err = proc.communicate()
        raise VcsimUnavailable(f"vcsim did not start: {err.strip()[-1000:]}")
    url = urllib.parse.urlsplit(line.split()[1])
    assert url.hostname and url.port
    return Vcsim(url.hostname, url.port, username, password, cert.cert_file, cert.fingerprint,
                 proc)
