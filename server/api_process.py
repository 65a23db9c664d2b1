"""One API process among several in front of one engine core (``--api-workers N``): what the supervisor spawns.

Each runs the same app as a single-process server, on its own event loop with its own media workers, serving on the
listening socket the supervisor bound; its engine is an ``AsyncLLM`` client of the shared engine core (vLLM's
``client_count``/``client_index``), its admission counts and its state live in the fleet's shared memory.
"""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any

from server import logs
from server.app import Attached, create_app
from server.config import Settings
from server.engine.vllm_launch import name_api_process
from server.engine.vllm_options import ClientSlot, EngineOptions
from server.http_server import serve
from server.service.fleet import Fleet, Seat

# vLLM's keys in the client config that are not the transport an AsyncLLM client is made with.
_NOT_TRANSPORT = ("client_count", "client_index", "api_server_loads")


@dataclass(frozen=True)
class ProcessArgs:
    """What every API process gets (pickled into it at spawn; the fleet's shared memory travels with it)."""

    settings: Settings
    options: EngineOptions  # resolved once by the supervisor: every process serves the same model, name and parsers
    fleet: Fleet


def main(listen_address: str, sock: socket.socket, args: ProcessArgs, client_config: dict[str, Any]) -> None:
    """The target ``APIServerProcessManager`` runs in each spawned process (its signature is vLLM's)."""
    settings = args.settings
    sock.set_inheritable(False)  # received from the supervisor inheritable: no child of this process may hold it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logs.configure(settings.log_level, settings.log_format)
    index, count = int(client_config["client_index"]), int(client_config["client_count"])
    name_api_process(index)
    transport = {key: value for key, value in client_config.items() if key not in _NOT_TRANSPORT}
    logging.getLogger(__name__).info("API process %d of %d, serving %s", index + 1, count, listen_address)
    attached = Attached(Seat(args.fleet, index), ClientSlot(transport, count, index), args.options)
    sys.exit(serve(create_app(settings, attached=attached), settings, sock, ignore_sigint=True))
