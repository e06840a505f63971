"""Starting, joining and stopping Ray for a command: a local instance, the cluster of
`ray.address` / `RAY_ADDRESS`, a head that outlives the command (`ray start --head`), and taking
an application and the detached actors next to it down. Ray and Serve only: quick to import."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray import serve

from cls_ray import console
from cls_ray.config import Config
from cls_ray.serving.names import (
    NAMESPACE,
    buffer_actor_name,
    registry_actor_name,
    scheduler_actor_name,
)

logger = logging.getLogger(__name__)


def _quiet_data() -> None:
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
    except AttributeError:
        pass


# Every worker of a cls-ray job silences the warnings known to be harmless (see cls_ray.console).
# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's
# default 2 s), and a run's start and end each wait on its polls: at 0.5 s a short run takes
# about 5 s less (tests/consolidate/test_sft.py, two trainings: 40 s -> 30 s on 2 cores). A
# user's own setting wins.
TRAIN_POLL_S = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
RUNTIME_ENV = {
    "worker_process_setup_hook": "cls_ray.console.quiet_worker",
    "env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_POLL_S},
}


def _joined() -> None:
    """After `ray.init`: Ray Data's progress bars off, known warnings silenced, and with a quiet
    console active, the workers' forwarded output into its log (see `route_worker_output`)."""
    _quiet_data()
    console.quiet_worker()
    c = console.active()
    if c is not None:
        route_worker_output(c)


def route_worker_output(c: console.Console) -> None:
    """Ray forwards its workers' output to the driver, which prints it; while `c` is active it
    goes to `c`'s log instead (the training steps in it onto its display), and Ray's printer
    comes back when `c` closes. Ray's dispatcher is private API: without it, or when this
    driver does not take the output (`log_to_driver=False`), nothing changes."""
    try:  # private API, so imported here where its absence is handled
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        printer = dict(dispatcher.handlers).get("ray_print_logs")
    except (ImportError, AttributeError) as e:
        logger.info("Ray's worker output stays on the console: %s", e)
        return
    if printer is None or printer == c.worker_lines:
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", c.worker_lines)

    def restore() -> None:
        if any(h == c.worker_lines for _, h in dispatcher.handlers):
            dispatcher.remove_handler("ray_print_logs")
            dispatcher.add_handler("ray_print_logs", printer)

    c.closers.append(restore)


def _log_to_driver(requested: bool) -> bool:
    """A quiet console takes the workers' output (into its log) whatever was asked."""
    return requested or console.active() is not None


def start_local_ray(num_cpus: int | None, log_to_driver: bool = False) -> None:
    """Starts a Ray instance on this machine, without the dashboard (see cls_ray.console)."""
    # Ray's monitor logs the cluster's status every few seconds (forwarded to the driver: most
    # of a demo's log); a single machine's status says nothing new.
    os.environ.setdefault("RAY_ENABLE_CLUSTER_STATUS_LOG", "0")
    # A loaded machine can miss Ray's start-up deadline (GCS or raylet); Ray raises a plain
    # Exception for that, so any failure of the start gets two more tries.
    for attempt in range(3):
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=_log_to_driver(log_to_driver),
                runtime_env=RUNTIME_ENV,
            )
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            logger.warning("Ray did not start; trying again")
            time.sleep(5)
    _joined()


def init_ray(cfg: Config, log_to_driver: bool = False, num_cpus: int | None = None) -> bool:
    """Ray for a job: the cluster of `ray.address` or `RAY_ADDRESS` (inside `ray job submit`),
    else a local instance (`num_cpus` overrides `ray.num_cpus`). Returns True when this call
    started or joined it (False: this process had it already)."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(
            address=address, log_to_driver=_log_to_driver(log_to_driver), runtime_env=RUNTIME_ENV
        )
        _joined()
    else:
        start_local_ray(num_cpus or cfg.ray.num_cpus, log_to_driver)
    return True


def connect_ray(cfg: Config, start: bool) -> bool:
    """Joins `ray.address` / RAY_ADDRESS / a running local head; with `start`, starts a head
    (`ray start --head`, which outlives this process). Returns True when this call started it."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False, namespace=NAMESPACE, runtime_env=RUNTIME_ENV)
        return False
    except (ConnectionError, RuntimeError):
        if not start or address != "auto":
            raise SystemExit(f"no Ray cluster at {address}; run `cls-ray up` first") from None
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    subprocess.run(cmd, check=True, capture_output=True)
    ray.init(address="auto", log_to_driver=False, namespace=NAMESPACE, runtime_env=RUNTIME_ENV)
    return True


def stop_ray() -> None:
    """Stops Serve and the local Ray cluster (`ray stop`) a command started."""
    serve.shutdown()
    ray.shutdown()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], capture_output=True)


def stop_state_actors(cfg: Config) -> None:
    """The buffer, registry and scheduler actors are detached; their state is on disk, so
    stopping them loses nothing."""
    app = cfg.serve.app_name
    for name in (buffer_actor_name(app), registry_actor_name(app), scheduler_actor_name(app)):
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass


def take_down(cfg: Config) -> None:
    """Deletes the application and stops the actors next to it."""
    try:
        serve.delete(cfg.serve.app_name)
    except Exception as e:  # noqa: BLE001 - nothing deployed is fine when going down
        logger.info("no app to delete: %s", e)
    stop_state_actors(cfg)


def marker(cfg: Config) -> Path:
    """The file that says `cls-ray up` started the local Ray cluster (so `down` stops it)."""
    return cfg.state_path / "ray-started-by-cls-ray"
