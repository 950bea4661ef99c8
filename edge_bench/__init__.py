"""Benchmark exported variants on CPU: latency distribution, memory, size and task accuracy, and a
recommendation of what to deploy. Reads artifacts from disk (an export directory's manifest.json,
.gguf files, ONNX or HF directories); uses only `arte.tasks` / `arte.prompts` from arte, for the same
prompts and answer extraction as the pipeline's evaluation.

    runtimes/     pytorch (fp32 reference), onnxruntime, llama_cpp, fake: one small interface
    variants.py   what to benchmark, discovered from export manifests and paths
    latency.py    timing, percentiles, the warm-up + repeat-until stopping rule
    memory.py     peak RSS in a fresh process per configuration (memory_probe.py is the child)
    host.py       CPU model, ISA flags, versions, busy-machine warning, affinity pinning
    bandwidth.py  memory read bandwidth and decode efficiency against it
    accuracy.py   task accuracy and top-1 agreement with the fp32 reference
    bench.py      run_bench(): the sweep over variants x threads x prompt lengths
    report.py     report.json / report.md, the table + one JSON line, recommend(), comparisons
    plots.py      accuracy vs latency (Pareto front) and size vs accuracy PNGs
"""
