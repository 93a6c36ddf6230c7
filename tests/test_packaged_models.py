"""The packaged real models (slow: minutes on CPU; run with `pytest -m slow`)."""

import pytest
import torch

from mvplatform.models import PACKAGED, ensure_converted, load_model
from mvplatform.spec import ModelSpec

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "Le chat est sur la table, et le chien"]


def test_cached_safetensors_copy_gives_the_gguf_logits():
    from transformers import AutoModelForCausalLM

    from mvplatform.models import default_cache_dir

    converted = ensure_converted("gemma3-270m")
    gguf = PACKAGED["gemma3-270m"].gguf_path(default_cache_dir())
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    loaded = load_model(ModelSpec(name="gemma3-270m", device="cpu"))
    assert str(converted) and loaded.n_layers == 18 and loaded.prompter.mode == "plain"
    for prompt in PROMPTS:
        ids = loaded.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            expected = reference(**ids).logits
            actual = loaded.model(**ids).logits
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_smollm2_instruct_loads_with_its_chat_template():
    loaded = load_model(ModelSpec(name="smollm2-135m-instruct", device="cpu"))
    assert loaded.n_layers == 30 and loaded.prompter.mode == "chat"
    prompt = loaded.prompter.format("Hello")
    assert "Hello" in prompt and prompt != "Hello"


def test_gemma_recognises_toxicity_well_above_chance(tmp_path):
    """The science end to end on the real model: built-in data, Ray, MLflow."""
    from mlflow.tracking import MlflowClient

    from mvplatform.spec import parse_spec
    from ray_jobs.submit import submit

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = parse_spec(f"name: slow\ndata: {{concepts: [toxicity], languages: [en, fr]}}\ntracking: {{uri: '{uri}'}}\n"
                      f"results: {{dir: '{tmp_path / 'results'}'}}")
    summary = submit(spec)
    assert summary.ok, summary.failures
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("slow").experiment_id], "tags.step = 'extract'")
    accuracy = {run.data.tags["language"]: run.data.metrics["best_accuracy"] for run in runs}
    assert set(accuracy) == {"en", "fr"}
    assert min(accuracy.values()) >= 0.75, accuracy
