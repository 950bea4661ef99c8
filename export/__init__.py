"""Export a trained student to files that ship: GGUF (llama.cpp / Ollama) and ONNX (onnxruntime),
quantized and verified against the PyTorch model. Imports `common`, never `arte`.

    run.py            export_model(): merge, checks, every requested variant, manifest (`arte export`)
    checks.py         pre-export checks (vocab vs embedding, BOS/EOS agreement, tied embeddings)
    adapter.py        LoRA adapter + base -> merged fp32 directory
    manifest.py       OUT/manifest.json: source hash, checks, tool versions, one record per variant
    reference.py      the fp32 PyTorch reference, top-1 / KL, greedy-text match, pass/flag thresholds
    gguf.py           GGUF orchestrator (export_gguf): convert, quantize, census, Modelfile, verify
    gguf_convert.py   HF -> F32/F16 GGUF by llama.cpp's own converter; architecture checked first
    llama_cpp_converter.py  that converter, unpacked from the llama-cpp-python sdist at set-up
    gguf_quantize.py  llama.cpp quantization, quant type names, tensor-type census
    gguf_verify.py    llama.cpp logits / greedy / tokenizer parity vs the reference, verify_gguf
    onnx.py           ONNX orchestrator (export_onnx): fp32, int8, int4, load checks, verify, records
    onnx_export.py    optimum-onnx fp32 export with KV cache, tied embedding stored once
    onnx_quantize.py  int8 (dynamic, per-channel) and int4 (MatMulNBits) from the fp32 export
    onnx_verify.py    exported ONNX run token by token, load checks, tokenizer parity, verify_onnx
"""
