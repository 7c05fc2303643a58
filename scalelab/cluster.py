"""Joining a Ray cluster (the optional `ray` extra), shared by the sweep runner
(`pretrain.ray_sweep`) and sharded test-time sampling (`inference.sharded`).

An unreachable address is found by a TCP probe first (ray.init itself waited > 200 s here on a
closed port, docs/LOG.md) and a bounded wait for ray.init: one clear error within the timeout.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from scalelab.errors import ConfigError

INSTALL_HINT = "Ray is not installed; install the extra with: pip install -e '.[ray]' (or pip install 'ray[default]>=2.40')"
def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


# ---- connecting --------------------------------------------------------------------------------
def _host_port(address: str) -> tuple[str, int] | None:
    """'host:port' or 'ray://host:port' -> (host, port); None for 'auto' / 'local'."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT (the head node's GCS port, 6379 by "
                          f"default) or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float) -> None:
    """Fail fast with one line when nothing listens at `address` (Ray's own connect retries last minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else (e.strerror or type(e).__name__)
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {reason} (is `ray start --head` running "
                          f"there, and is the port open?)") from None


def connect(address: str | None, *, timeout_s: float = 20.0, num_cpus: int | None = None,
            oom_retries: int = 1) -> bool:
    """Start a local Ray instance (address None) or join the cluster at `address`. Returns True when
    this call initialised Ray (so the caller shuts it down), False when Ray was already up."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_task_oom_retries", str(oom_retries))  # read when the driver's core worker starts
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address is None:
        # On this thread: the processes a local instance starts die with the thread that started
        # them (Linux's parent-death signal), so a helper thread that returns would take them along.
        # address="local": a new instance always. ray.init() without an address joins the cluster
        # named by RAY_ADDRESS or by the last `ray start` on this machine (Ray's current-cluster file),
        # and when that cluster is gone it retried for minutes (docs/LOG.md, 2026-11-25).
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kw)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"could not start a local Ray instance: {type(e).__name__}: {first_line(e)}") from None
        return True
    probe(address, min(timeout_s, 10.0))
    _send_local_token()
    kw["address"] = address
    # ray.init has no timeout of its own when joining: run it on a helper thread (joining starts no
    # processes) and stop waiting after timeout_s; a hung attempt stays behind on its daemon thread.
    box: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(**kw)
            box["error"] = None
        except BaseException as e:  # noqa: BLE001 - reported below, on the caller's thread
            box["error"] = e

    t = threading.Thread(target=init, name="ray-init", daemon=True)
    t.start()
    t.join(timeout_s)
    if "error" not in box:
        raise ConfigError(f"no Ray cluster answered at {address} within {timeout_s:.0f} s: something listens on "
                          f"that port, but it is not a Ray head node's GCS, or the cluster wants a token this "
                          f"machine lacks (set RAY_AUTH_TOKEN, or copy the head's ~/.ray/auth_token here)")
    if box["error"] is not None:
        e = box["error"]
        raise ConfigError(f"could not join the Ray cluster at {address}: {type(e).__name__}: {first_line(e)}") from None
    return True


def _send_local_token() -> None:
    """Ray's rule for `ray start --head`, applied to this driver: with RAY_AUTH_MODE unset and a token
    on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), use token auth. A head
    started next to a token turns token auth on by itself, but `ray.init(address=...)` does not, and
    then retries on "InvalidAuthToken" until our timeout (Ray 2.60; docs/LOG.md, 2026-11-25). A token
    sent to a cluster without authentication is ignored (checked). Ray's helper is private: if it
    moves, nothing changes and the timeout message names the token."""
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:
        return
    log = logging.getLogger(auth.__name__)
    level = log.level
    log.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, not of joining one
    try:
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # noqa: BLE001 - best effort; RAY_AUTH_MODE=token does the same by hand
        pass
    finally:
        log.setLevel(level)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


# ---- sweeps ------------------------------------------------------------------------------------
def describe_failure(err: BaseException) -> str:
    """One line naming why a Ray task ended without a result."""
    ray = require_ray()
    exc = ray.exceptions
    first = first_line(err)
    if isinstance(err, exc.OutOfMemoryError):
        return f"out of memory (Ray's memory monitor killed the worker): {first}"
    if isinstance(err, (exc.WorkerCrashedError, exc.NodeDiedError, exc.LocalRayletDiedError)):
        return f"worker died: {type(err).__name__}: {first}"
    if isinstance(err, exc.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return f"{type(cause).__name__}: {first_line(cause)}"
    return f"{type(err).__name__}: {first}"
