"""ARTE: align a teacher LM with a small student's preferences, then distil (arXiv 2406.19227).

`import arte` stays light: torch, transformers, llama_cpp and friends are imported inside the
functions and plug-ins that need them.
"""

__version__ = "0.1.0"
