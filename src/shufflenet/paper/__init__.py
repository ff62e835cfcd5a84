"""The papers' published figures (complexity, errors, latency) that our results are compared with."""
