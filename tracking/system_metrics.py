"""Optional system metrics (CPU, memory, disk, network, GPU) on a submission's parent run, off by default.

Switched on the way MLflow users know: ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` (or
``mvp submit --system-metrics``, which sets it); ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` sets the
sampling period (10 s by default). MLflow's own monitor samples the machine running ``mvp submit``
while the submission runs and logs ``system/*`` metrics on its parent run, so the run page's System
metrics tab draws them. With local Ray that machine is also where the workers run; on a cluster the
other nodes are not sampled.
"""

from __future__ import annotations

from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor


def start_monitor(tracking_uri: str, run_id: str, resumed: bool = False) -> SystemMetricsMonitor | None:
    """A started monitor logging to ``run_id`` when system metrics are switched on, else None."""
    if not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
        return None
    monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def stop_monitor(monitor: SystemMetricsMonitor | None) -> None:
    """Stop sampling (the last samples are logged first)."""
    if monitor is not None:
        monitor.finish()
