"""Export a trained student to files that ship: GGUF (llama.cpp / Ollama) and ONNX (onnxruntime),
quantized and verified against the PyTorch model.

    checks.py     pre-export checks (vocab vs embedding, BOS/EOS agreement, tied embeddings)
    adapter.py    LoRA adapter + base -> merged fp32 directory
    gguf.py       our HF -> GGUF converter (Llama, Qwen2), llama.cpp quantization, census, Modelfile
    onnx.py       optimum-onnx export with KV cache, int8 (dynamic, per-channel), int4 (MatMulNBits)
    verify.py     tokenizer parity, top-1 / KL over KV-cache decode steps, greedy text vs PyTorch
    manifest.py   OUT/manifest.json: source hash, checks, tool versions, one record per variant
    run.py        export_model(): all of the above in one call (`arte export ...`)
"""
