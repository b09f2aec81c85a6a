"""The demo: a simulated LLM provider and the agents `corral demo` runs against it."""
