"""The export folder's model card (export/model_card.py): Hugging Face front matter that
huggingface_hub's ModelCard parser reads, the run's provenance, accuracies and caveats, and each
exported variant's fidelity."""

from __future__ import annotations

import json

from export.model_card import card_license, write_model_card

MANIFEST = {
    "source": {"path": "/runs/r/train/arte"},
    "variants": [
        {
            "format": "gguf",
            "quant": "q4_k_m",
            "size_bytes": 2.5e6,
            "bits_per_weight": 4.85,
            "verification": {"top1_agreement": 0.97, "mean_kl": 0.0123},
        },
        {"format": "onnx", "quant": "int8", "size_bytes": 4e6, "bits_per_weight": 8.0, "verification": {}},
    ],
}


def _run(tmp_path, teacher="meta-llama/Meta-Llama-3-70B-Instruct"):
    run = tmp_path / "run"
    run.mkdir()
    config = {"teacher": {"model": teacher}, "student": {"model": "google/gemma-2b"}, "tasks": ["navigate"]}
    (run / "manifest.json").write_text(json.dumps({"config": config}))
    acc = [
        {"variant": v, "task": t, "shots": 3, "acc": a, "low": a - 0.05, "high": a + 0.05, "n": 147}
        for v, a in (("vanilla", 0.4), ("arte", 0.5))
        for t in ("navigate", "macro")
    ]
    summary = {
        "accuracy": {"accuracy": acc},
        "caveats": ["**D_pref is a random sample, not IRT-selected** (navigate: too few rows)"],
        "data": {"sft_examples_per_task": {"arte": {"navigate": 250}}, "prefset": {"navigate": "random"}},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_card_parses_and_carries_the_runs_numbers(tmp_path):
    from huggingface_hub import ModelCard

    path = write_model_card(tmp_path, MANIFEST, _run(tmp_path))
    card = ModelCard.load(path)
    assert card.data.base_model == "google/gemma-2b" and card.data.license == "other"  # gemma vs llama3
    assert {"arte", "gguf", "onnx"} <= set(card.data.tags)
    (result,) = card.data.eval_results
    assert (
        result.dataset_name == "navigate" and result.metric_type == "accuracy" and result.metric_value == 50.0
    )
    text = path.read_text()
    assert "gemma" in text and "llama3" in text  # both terms named
    assert "| arte | navigate | 3 | 50.0 [45.0, 55.0] | 147 |" in text
    assert "D_pref is a random sample" in text and "navigate 250" in text and "navigate random" in text
    assert (
        "| gguf | q4_k_m | 2.5 | 4.85 | 0.970 | 0.0123 |" in text
        and "| onnx | int8 | 4.0 | 8.00 | - | - |" in text
    )


def test_a_shared_license_is_inherited_and_no_run_gives_a_plain_card(tmp_path):
    assert card_license("google/gemma-2b", "google/gemma-7b-it")[0] == "gemma"
    assert card_license("my-model", "my-teacher")[0] == "other"
    from huggingface_hub import ModelCard

    card = ModelCard.load(write_model_card(tmp_path, MANIFEST))
    assert card.data.base_model == "/runs/r/train/arte" and not card.data.eval_results
