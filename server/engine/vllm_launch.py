"""One engine core and several API processes in front of it, wired as vLLM's own ``--api-server-count`` wires them
(``vllm.entrypoints.cli.serve.run_multi_api_server``): the ZMQ listeners are bound here, the engine core is started by
``launch_core_engines``, and ``APIServerProcessManager`` spawns the API processes, each handed its listeners and its
``client_count``/``client_index`` (the ``client_config`` that becomes an ``AsyncLLM``'s ``client_addresses``). Only the
target each API process runs is ours. Nothing here is an IPC of our own.
"""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from server.engine.vllm_options import EngineOptions, engine_args

logger = logging.getLogger(__name__)


@dataclass
class Launched:
    """The running processes: the API processes (ours) and the engine core's (vLLM's manager owns them)."""

    api_processes: list[BaseProcess]
    _api_manager: Any
    _engine_manager: Any
    _listeners: Any = None

    def engine_sentinels(self) -> list[int]:
        return list(self._engine_manager.sentinels()) if self._engine_manager is not None else []

    def shutdown_api(self, timeout_s: float) -> None:
        if self._api_manager is not None:
            self._api_manager.shutdown(timeout=timeout_s)

    def shutdown_engine(self, timeout_s: float) -> None:
        if self._engine_manager is not None:
            self._engine_manager.shutdown(timeout=timeout_s)
        # Closed and collected now: vLLM's listeners close themselves in __del__, which fails (a traceback on every
        # stop) if it first runs at interpreter exit, with its modules gone.
        if self._listeners is not None:
            self._listeners.cleanup()
        self._listeners = None
        gc.collect()


def multiprocess_metrics() -> None:
    """prometheus-client's multiprocess mode for every process started after this (vLLM's own setup: a temporary
    folder it removes at exit)."""
    from vllm.v1.metrics.prometheus import setup_multiprocess_prometheus

    setup_multiprocess_prometheus()


def launch(
    options: EngineOptions,
    count: int,
    target: Callable[..., None],
    target_args: Any,
    sock: socket.socket,
    listen_address: str,
    started: Callable[[Launched], None],
) -> Launched:
    """Start the engine core and ``count`` API processes running ``target(listen_address, sock, target_args,
    client_config)``; return once the engine core is up (blocking: minutes for a large checkpoint). ``started`` is told
    as soon as the processes exist, so a signal during the long start can reach them; if the start fails, everything
    started is stopped and the error raised."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
    from vllm.v1.executor import Executor
    from vllm.v1.utils import APIServerProcessManager

    args = engine_args(options)
    args._api_process_count, args._api_process_rank = count, -1
    config = args.create_engine_config(UsageContext.OPENAI_API_SERVER)
    listeners = bind_engine_zmq_listeners(config, count)
    launched = Launched([], None, None, listeners)
    # Only ``launched`` may hold them: something in vLLM's start keeps this frame alive until exit, and its
    # ``__del__`` at exit prints a traceback.
    del listeners
    try:
        with launch_core_engines(
            config, Executor.get_class(config), not args.disable_log_stats, launched._listeners.addresses
        ) as up:
            launched._engine_manager = up.engine_manager
            coordinator = up.coordinator
            manager = APIServerProcessManager(
                listen_address=listen_address,
                sock=sock,
                args=target_args,
                num_servers=count,
                input_listeners=launched._listeners.inputs,
                output_listeners=launched._listeners.outputs,
                target_server_fn=target,
                stats_update_address=coordinator.get_stats_publish_address() if coordinator else None,
                tensor_queue=up.tensor_queue,
            )
            launched.api_processes, launched._api_manager = manager.processes, manager
            started(launched)
            up.watched_frontend_processes = manager.processes  # one exiting during the start fails the start
    except BaseException:
        launched.shutdown_api(timeout_s=10)
        launched.shutdown_engine(timeout_s=10)
        raise
    return launched


def name_api_process(index: int) -> None:
    """``VLLM::APIServer_<index>`` in ps and top, as vLLM names its own API processes (it does so in the target it
    spawns, which ours replaces), next to its ``VLLM::EngineCore`` and ``VLLM::Worker``."""
    from vllm.utils.system_utils import set_process_title

    set_process_title("APIServer", str(index))
