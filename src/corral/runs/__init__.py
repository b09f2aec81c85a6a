"""The durable-execution API agents are written against."""

from corral.runs.context import RunContext

__all__ = ["RunContext"]
