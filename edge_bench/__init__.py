"""Benchmark exported variants on CPU: latency distribution, memory, size and task accuracy, and a
recommendation of what to deploy. Reads artifacts from disk (an export directory's manifest.json,
.gguf files, ONNX or HF directories). It imports neither the training core (`arte`) nor `export`:
the task loaders, prompts and answer extraction it shares with the pipeline's evaluation, and the
GGUF / safetensors / ONNX readers it shares with the export, are in `common`.

    runtimes/     pytorch (fp32 reference), onnxruntime, llama_cpp, fake: one small interface
    variants.py   what to benchmark, discovered from export manifests and paths
    latency.py    timing, percentiles, the warm-up + repeat-until stopping rule
    memory.py     peak RSS in a fresh process per configuration (memory_probe.py is the child)
    host.py       CPU model, ISA flags, versions, busy-machine warning, affinity pinning
    bandwidth.py  memory read bandwidth and decode efficiency against it
    accuracy.py   task answers per question; top-1 agreement and KL along the fp32 reference's answers
    accuracy_runs.py  which questions each variant answered, and the report's accuracy figures from them
    stats.py      Wilson interval, Tango paired interval, exact McNemar test, questions a tolerance needs
    paired.py     a variant against its reference on the same questions: drop, interval, verdict
    fidelity.py   the export manifest's verification and the bench's own top-1 / KL; the two rankings
    auto_questions.py  --n_questions auto: a pilot, the number the decision needs, within a time budget
    settings.py   BenchSettings: every setting of a run, validated once (CLI and Python callers)
    measure.py    one variant at one thread count: load, time, peak RSS, efficiency
    bench.py      run_bench(): the sweep over variants x threads x prompt lengths, accuracy, the report
    recommend.py  best speed, a recommendation that respects the intervals, comparison with an old report
    schema.py     report.json's schema: one dataclass per object, checked on load, written back unchanged
    json_records.py  the typed-JSON machinery under it (type hints -> checks with key paths)
    report.py     report.json / report.md (load, write), the table + one JSON line
    accuracy_report.py  the accuracy and fidelity tables and the rankings (stdout and report.md)
    plots.py      accuracy (with error bars) vs latency (Pareto front) and size vs accuracy PNGs
"""
