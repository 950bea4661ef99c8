"""Plumbing shared by the training core (`arte`), `export` and `edge_bench`; it imports none of them
(tests/test_import_direction.py checks). The README's tree lists each of its modules.

    errors, config, records, paths   user errors, typed configs, crash-safe files, writable outputs
    tasks/, prompts                   task data and the prompt texts the pipeline and the bench share
    hf_models, weights, gguf_tokenizer   loading models with transformers, safetensors only
    gguf_header, safetensors_header, onnx_decode, onnx_tensors   file-format readers and the ONNX loop
    llama_cpp_loader, llama_cpp_server, llama_cpp_batch   llama.cpp: opening models, the server, batching
    threads, token_ids                small helpers
    hf_warnings                       a transformers false alarm silenced (installed here)
"""

from common import hf_warnings

hf_warnings.install()
