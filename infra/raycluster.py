"""Ray start-up: a local Ray by default, a cluster when an address is given."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start Ray on this machine.

    On a cluster the workers do not share the driver's environment: Loupe's own settings
    (``LOUPE_*``, e.g. storage endpoints) travel with the job as its runtime environment.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        settings = {k: v for k, v in os.environ.items() if k.startswith("LOUPE_")}
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": settings} if settings else None)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
