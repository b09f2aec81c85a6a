"""The durable-execution API agents are written against."""

from corral.runs.context import FanoutLimits, RunContext, StepPolicy

__all__ = ["FanoutLimits", "RunContext", "StepPolicy"]
