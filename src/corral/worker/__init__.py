"""Workers: bounded slots, leases, heartbeats, fencing, graceful drain."""

from corral.worker.worker import AgentFn, NonRetryableError, Worker, WorkerOptions

__all__ = ["AgentFn", "NonRetryableError", "Worker", "WorkerOptions"]
