"""Export a trained student to files that ship: GGUF (llama.cpp / Ollama) and ONNX (onnxruntime),
quantized and verified against the PyTorch model. (Issue: export layer; not built yet.)"""
