"""`coriolis-server writer`: run the writer agent on the destination side of a copy."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

LOG = logging.getLogger("coriolis.writer")
KEY_FILE = "writer-agent-key"
DETAILS_FILE = "writer.json"


def _secret_file(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)


def agent_key(data_dir: Path) -> str:
    """The key that opens transfers on this agent, created on first start."""
    path = data_dir / KEY_FILE
    if not path.exists():
        _secret_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def cmd_writer(args: argparse.Namespace) -> None:
    from coriolis.transfer.agent import AgentConfig, WriterAgent
    from coriolis.transfer.agent_http import AgentServer
    from coriolis.transfer.tls import ensure_certificate

    data_dir = Path(args.data_dir or os.environ.get("CORIOLIS_WRITER_DIR")
                    or Path.home() / ".local/share/coriolis-writer")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    roots = [Path(r).resolve() for r in args.roots]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"error: --root {', '.join(missing)}: not a directory")
    hosts = sorted({args.host, socket.gethostname(), "localhost", "127.0.0.1",
                    *(args.advertise_host or [])})
    cert = ensure_certificate(data_dir, hosts)
    agent = WriterAgent(AgentConfig(data_dir, roots, agent_key(data_dir),
                                    listen_host=args.host))
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    port = sock.getsockname()[1]
    shown = (args.advertise_host or [args.host])[0]
    url = f"https://[{shown}]:{port}" if ":" in shown else f"https://{shown}:{port}"
    details = {"url": url, "fingerprint": cert.fingerprint, "key": agent.config.agent_key}
    _secret_file(data_dir / DETAILS_FILE, json.dumps(details, indent=2) + "\n")
    print(f"Writer agent listening on {url}\n  certificate fingerprint (SHA-256): "
          f"{cert.fingerprint}\n  serving: {', '.join(map(str, roots))}\n"
          f"  connection details for endpoints (with the agent key): "
          f"{data_dir / DETAILS_FILE}", flush=True)
    server = AgentServer(sock, agent, cert.cert_file, cert.key_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        agent.close()


def register_subcommands(sub: argparse._SubParsersAction) -> None:
    writer = sub.add_parser(
        "writer", help="writer agent on the destination host: receives disk chunks over "
                       "HTTPS and runs OS morphing of images under its roots")
    writer.add_argument("--host", default="127.0.0.1", help="address to listen on")
    writer.add_argument("--port", type=int, default=7668, help="0 picks a free port")
    writer.add_argument("--root", dest="roots", action="append", required=True,
                        help="directory whose disk images the agent may write (repeatable)")
    writer.add_argument("--advertise-host", action="append",
                        help="name or address workers use to reach this host (goes into the "
                             "certificate and writer.json)")
    writer.add_argument("--data-dir", help="certificate, key and transfer state (default "
                                           "$CORIOLIS_WRITER_DIR or "
                                           "~/.local/share/coriolis-writer)")
    writer.add_argument("-v", "--verbose", action="store_true")
    writer.set_defaults(func=cmd_writer)
