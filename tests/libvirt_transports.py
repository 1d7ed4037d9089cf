"""Remote transports to the test machine's libvirtd, for the libvirt endpoint tests.

``start_sshd``: an OpenSSH server of the test's own (its own host key, config and pid file,
on a free loopback port; no system configuration changed), letting root in with one key, so
that ``qemu+ssh://root@127.0.0.1:PORT/system`` reaches the system libvirtd. Only
``/run/sshd`` (sshd's compiled-in privilege separation folder, which Debian's service makes
at boot) is made when missing.

``start_tls_libvirtd``: a second libvirtd listening on TLS on a free loopback port. A second
privileged daemon would share the system one's state folders (``/run/libvirt/qemu``...) and
could disturb its domains, so this one runs unprivileged, as ``nobody`` with its own HOME and
XDG folders (a session daemon: ``qemu+tls://127.0.0.1:PORT/session``); the TLS transport,
the certificates and their checks are the same as for ``/system``. Certificates: a test CA,
a server certificate for IP 127.0.0.1, a client certificate (openssl).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the test server exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (and ``path.pub``); returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    proc: subprocess.Popen[bytes]
    client_key: str
    """The private key root may log in with (OpenSSH format)."""
    known_hosts: str
    """The known_hosts line of this server's host key."""
    other_key: str
    """A private key the server does not accept."""
    log: Path

    def uri(self) -> str:
        return f"qemu+ssh://root@127.0.0.1:{self.port}/system"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(folder: Path) -> Sshd:
    """An sshd on a free loopback port with its files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_pub = keygen(folder / "host_key", "coriolis-test-host")
    client_pub = keygen(folder / "client_key", "coriolis-test-client")
    keygen(folder / "other_key", "coriolis-test-other")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"PidFile {folder / 'sshd.pid'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PrintMotd no", "LogLevel VERBOSE", ""]))
    log = folder / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Sshd(port, proc, (folder / "client_key").read_text(),
                f"[127.0.0.1]:{port} {host_pub}", (folder / "other_key").read_text(), log)


NOBODY = 65534


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(folder: Path) -> None:
    """``cacert.pem`` (and ``ca.key``), ``servercert.pem``/``serverkey.pem`` (IP 127.0.0.1,
    serverAuth), ``clientcert.pem``/``clientkey.pem`` (clientAuth) in ``folder``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "ca.key"),
             "-out", str(folder / "cacert.pem"), "-days", "2", "-subj", "/CN=coriolis test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, usage, san in (("server", "127.0.0.1", "serverAuth",
                                  "subjectAltName=IP:127.0.0.1"),
                                 ("client", "coriolis-client", "clientAuth", "")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / f"{name}key.pem"),
                 "-out", str(folder / f"{name}.csr"), "-subj", f"/CN={cn}")
        ext = folder / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={usage}\n{san}\n")
        _openssl("x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA",
                 str(folder / "cacert.pem"), "-CAkey", str(folder / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-out", str(folder / f"{name}cert.pem"),
                 "-extfile", str(ext))


@dataclass
class TlsLibvirtd:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path
    log: Path

    def uri(self) -> str:
        return f"qemu+tls://127.0.0.1:{self.port}/session"

    def tls(self) -> dict[str, str]:
        """The ``connection_info.tls`` of a client the daemon accepts."""
        return {"ca_cert": (self.folder / "cacert.pem").read_text(),
                "client_cert": (self.folder / "clientcert.pem").read_text(),
                "client_key": (self.folder / "clientkey.pem").read_text()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_tls_libvirtd() -> TlsLibvirtd:
    """A session libvirtd as ``nobody`` listening on TLS at 127.0.0.1 (its files in a new
    folder under the system temp folder, which ``nobody`` can reach; ``stop`` removes it)."""
    folder = Path(tempfile.mkdtemp(prefix="coriolis-tls-libvirtd-"))
    try:
        make_certs(folder)
        for sub in ("home", "home/run", "home/config", "home/cache", "sock"):
            (folder / sub).mkdir()
        port = free_port()
        conf = folder / "libvirtd.conf"
        conf.write_text("\n".join([
            "listen_tls = 1", "listen_tcp = 0", f'tls_port = "{port}"',
            'listen_addr = "127.0.0.1"', f'unix_sock_dir = "{folder / "sock"}"',
            'auth_tls = "none"', f'key_file = "{folder / "serverkey.pem"}"',
            f'cert_file = "{folder / "servercert.pem"}"', f'ca_file = "{folder / "cacert.pem"}"',
            ""]))
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        os.chmod(folder, 0o700)
        home = folder / "home"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"),
               "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
        log = folder / "libvirtd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "libvirtd", "--listen", "-f", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        running = TlsLibvirtd(port, proc, folder, log)
        try:
            wait_port(port, proc, log, timeout=30)
        except BaseException:
            running.stop()
            raise
        return running
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
