"""Ray start-up for a search: a new local Ray that listens on 127.0.0.1 only, or the cluster at
``--address`` (with its token, where the user has one). Imported by :mod:`autokd.search.tune`.

Who owns Ray: a search shuts down only the Ray it started. Where the caller has Ray running already
(``ray.init()`` of their own, or :func:`local_ray` around several searches) and gives no
``address``, the search runs on that Ray and leaves it running, as Ray Tune does; the second search
then finds its workers started and torch imported."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray
from ray._private import ray_constants

from ..errors import UserError
from .config import SearchConfig

_INIT_KWARGS: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
_PENDING = "TUNE_MAX_PENDING_TRIALS_PG"  # Ray Tune's queue of trials not yet started: see pending_trials
_OURS = False  # the Ray this process is connected to was started by init_ray (and is shut down by it)


def init_ray(cfg: SearchConfig) -> None:
    """A new local Ray bound to loopback, or the cluster at ``cfg.address``; the caller's own Ray
    where one is running and ``cfg.address`` is not set."""
    global _OURS
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C is the driver's: see Interrupt
    if ray.is_initialized() and not _OURS and not cfg.address:
        return  # the caller's Ray: theirs to shut down
    if ray.is_initialized():
        ray.shutdown()  # a fresh connection per round: the address may differ from the last one
    _OURS = False
    if cfg.address:
        _use_ray_token()
        try:
            ray.init(address=cfg.address, **_INIT_KWARGS)
        except ConnectionError as e:
            raise UserError(f"--address {cfg.address}: Ray did not accept the connection ({str(e)[:120]}); if the "
                            "cluster uses token authentication, set RAY_AUTH_TOKEN (see `ray get-auth-token`)") from None
    else:
        _start_local()
    _OURS = True


def _start_local() -> None:
    """A new local Ray bound to loopback; the dashboard stays off. address="local": never join a
    cluster that `ray start` left on this machine (address=None would, silently)."""
    with _loopback_only():
        ray.init(address="local", _node_ip_address="127.0.0.1", num_gpus=None, **_INIT_KWARGS)


@contextmanager
def pending_trials(parallel: int) -> Iterator[None]:
    """Let Ray Tune queue ``parallel`` trials at once for this search only.

    Before Ray 2.5x, Tune queued one pending trial at a time for any searcher but its own
    (``max_concurrent_trials`` was not read there; TUNE_MAX_PENDING_TRIALS_PG was the only way), so
    ``--parallel 2`` started its second trial only once the first one's worker was up. Tune reads
    the variable when a run starts; it is set for that run and put back afterwards, so a later
    search in this process (or a process it starts) with another ``--parallel`` gets its own. A
    value the user set is left alone."""
    if _PENDING in os.environ:
        yield
        return
    os.environ[_PENDING] = str(max(1, parallel))
    try:
        yield
    finally:
        os.environ.pop(_PENDING, None)


@contextmanager
def local_ray() -> Iterator[None]:
    """A loopback-only local Ray that every search inside the block shares, shut down at its end:
    ``with local_ray(): search(a); search(b)`` starts Ray once, not twice."""
    if ray.is_initialized():
        raise RuntimeError("local_ray(): Ray is already running in this process")
    _start_local()
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Have a local Ray listen on 127.0.0.1 only.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's outward address and then its
    GCS, raylet and workers listen on every interface; it keeps the node on loopback (and its
    servers bound there) only where it believes multi-node clusters are off. That switch is
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported, so the constant is set too
    while the local node starts, and both are put back afterwards (a later ``--address`` run in
    this process must see its real address). tests/test_faults_security.py checks the sockets."""
    env, constant = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = env


_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _use_ray_token() -> None:
    """Ray >= 2.5x clusters started with `ray start --head` require a token by default, but
    ``ray.init(address=...)`` sends one only when RAY_AUTH_MODE=token. Where the user has a token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which `ray start` writes) and did
    not choose a mode, send it; a cluster without authentication accepts it too."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray read its config when it was imported: have it read the mode again
            from ray._raylet import Config  # type: ignore[attr-defined]  # built from Cython

            Config.initialize("")
        except (ImportError, AttributeError):
            pass


def shutdown_ray() -> None:
    """Shut down the Ray :func:`init_ray` started; a caller's own Ray keeps running."""
    global _OURS
    if _OURS and ray.is_initialized():
        ray.shutdown()
    _OURS = False
