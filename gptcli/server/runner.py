"""Bind the socket, run uvicorn, stop cleanly on SIGINT/SIGTERM.

The socket is bound before the model loads (a port in use fails in a moment, not after the
load) but listens only once uvicorn serves: the ready line on stderr then means that
connections are accepted. ``--port 0`` binds a free port and the ready line names it.

On SIGINT or SIGTERM uvicorn stops accepting and waits for in-flight requests (streams
included) up to ``SHUTDOWN_SECONDS``; then the engine stops. Uvicorn re-raises the signal
once it is done, so gptcli's own handlers end the run with the house's exit code (130, 143).
"""

from __future__ import annotations

import errno
import signal
import socket

import uvicorn

from gptcli.errors import UsageError
from gptcli.server.errors import log_line

SHUTDOWN_SECONDS = 30  # in-flight requests get this long to finish after SIGINT/SIGTERM


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), not yet listening.

    Raises:
        UsageError: the address is not this machine's, or the port is taken or not allowed.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(_bind_failure(host, port, exc)) from None
    sock.set_inheritable(True)
    return sock


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use; choose another with --port, or --port 0 for a free one"
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges on this machine; use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host!r} is not an address of this machine"
    return f"cannot listen on {host}:{port}: {exc.strerror}"


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, sock: socket.socket, verbose: bool, ready_line: str, on_stop) -> None:
    """Serve ``app`` on ``sock`` until a signal; ``on_stop()`` runs once uvicorn has drained.

    Raises:
        KeyboardInterrupt: after a clean stop on SIGINT or SIGTERM (gptcli's handlers turn the
            re-raised signal into it), for ``__main__`` to exit with 130 or 143.
    """
    config = uvicorn.Config(app, http="h11", loop="asyncio", ws="none", lifespan="off", interface="asgi3",
                            log_config=uvicorn.config.LOGGING_CONFIG if verbose else None,
                            log_level="info" if verbose else None, access_log=verbose,
                            timeout_graceful_shutdown=SHUTDOWN_SECONDS, server_header=False)
    server = _Server(config, ready_line)
    try:
        server.run(sockets=[sock])
    finally:
        on_stop()
        sock.close()
    if server.stopped_by is not None:  # a uvicorn that did not re-raise the signal: end as it would have
        signal.raise_signal(server.stopped_by)


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it listens and when it starts to stop (on gptcli's stderr)."""

    def __init__(self, config, ready_line: str):
        super().__init__(config)
        self.ready_line = ready_line
        self.stopped_by: int | None = None  # the signal that stopped it

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            log_line(self.ready_line)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            self.stopped_by = sig
            log_line(f"stopping ({signal.Signals(sig).name}): finishing the requests in flight, at most "
                 f"{SHUTDOWN_SECONDS} s (Ctrl-C again to stop at once)")
        super().handle_exit(sig, frame)
