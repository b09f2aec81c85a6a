"""HTTP service benchmark: submit latency over HTTP while runs execute (see README.md)."""
