"""Plumbing shared by the training core (`arte`), `export` and `edge_bench`; it imports none of them.

llama_cpp_loader.py   the one place that opens llama.cpp models (extra buffer types vs AMX)
llama_cpp_server.py   llama-cpp-python's OpenAI-compatible server with that same setting
"""
