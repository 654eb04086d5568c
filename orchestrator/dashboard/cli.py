"""`glo dashboard`: serve the read-only web view of a GLO database (Starlette on uvicorn).

Only click is imported at module level, so `glo --help` and the other commands never load the web stack.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

from orchestrator.cli.runs import DB_OPTION, _errors


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:  # a name: loopback only if every address it resolves to is
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a clean error."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise click.ClickException(f"cannot resolve --host {host!r}: {exc}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (another program uses it: pass --port N, or --port 0 for a free one)" if exc.errno == 98 else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    return f"http://{shown}:{port}/"


@click.command("dashboard")
@DB_OPTION
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port; the URL is printed).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host. The dashboard has no login: whoever reaches the port reads the "
                   "whole database.")
@_errors
def dashboard(db_path: str | None, host: str, port: int, allow_remote: bool) -> None:
    """A live web page of the database's runs, losses and jobs (read-only; Ctrl-C stops it).

    It opens the database read-only (SQLite mode=ro), so it can never change or lock a running
    search, and keeps up while `glo run` writes: run pages update by themselves every 2 s."""
    from db.session import resolve_db_path

    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise click.UsageError(f"--host {host} is not a loopback address; the dashboard has no login, so serving "
                               "it to other machines needs --allow-remote (or keep the default 127.0.0.1 and use "
                               "an SSH tunnel: ssh -L 8080:127.0.0.1:8080 HOST)")
    import uvicorn

    from orchestrator.dashboard.app import create_app

    path = resolve_db_path(db_path)
    app = create_app(path, allowed_hosts=None if loopback else ["*"])
    sock = bind(host, port)
    if not loopback:
        click.echo(f"WARNING: serving on {host}, not loopback: the dashboard has no login; anyone who can reach "
                   f"port {sock.getsockname()[1]} can read every run in {path}", err=True)
    click.echo(f"GLO dashboard of {app.state.db.path} (read-only): {url_of(sock)}")
    click.echo("Ctrl-C stops it.")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
