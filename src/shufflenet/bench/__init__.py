"""Benchmarks: latency beside complexity (ShuffleNet Table 8), plots, ONNX Runtime per-operator profile, the
plain ShuffleNet yardstick."""
