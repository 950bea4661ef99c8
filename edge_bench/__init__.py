"""Benchmark exported variants on CPU: latency distribution, memory, size and task accuracy.
Reads artifacts from disk only; never imports `arte` internals. (Issue: edge_bench; not built yet.)"""
