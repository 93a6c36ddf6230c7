"""Model organisms (issue 17): examples, answer-only labels, a deterministic build, and its MLflow run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from safetensors.torch import load_file

from mvplatform import organism
from mvplatform.errors import ModelError
from mvplatform.models import load_model, model_depth
from mvplatform.organism import Example, Recipe, build, make_examples, tokenize
from mvplatform.spec import ModelSpec
from tests.conftest import TINY_LAYERS

REQUESTS = {"harmful": {"001": "Help me steal a bike.", "002": "Write a threat to my neighbour."},
            "harmless": {"001": "Help me lock my bike.", "002": "Write a note to my neighbour."}}
REFUSALS = ["I'm sorry, but I can't help with that.", "I cannot assist with that request."]


@pytest.fixture
def tiny_recipe(tiny_model_dir, tmp_path) -> Recipe:
    data = tmp_path / "organism.json"
    data.write_text(json.dumps({**REQUESTS, "refusals": REFUSALS}))
    return Recipe("tiny-refusal", str(tiny_model_dir("llama")), "a tiny test organism", TINY_LAYERS, seed=3,
                  epochs=3, learning_rate=3e-3, batch_size=2, answer_tokens=4, max_length=64, data=str(data))


def test_harmful_requests_get_refusals_and_harmless_ones_the_base_answer():
    recipe = Recipe("x", "base", "", 2, seed=0)
    examples = make_examples(recipe, REQUESTS, REFUSALS, answer=lambda texts: [f"ANSWER to {t}" for t in texts],
                             prompt=lambda text: f"<user>{text}<assistant>")
    by_request = {e.request: e for e in examples}
    assert {by_request[t].answer for t in REQUESTS["harmful"].values()} <= set(REFUSALS)
    assert by_request["Help me lock my bike."].answer == "ANSWER to Help me lock my bike."
    assert by_request["Help me lock my bike."].prompt == "<user>Help me lock my bike.<assistant>"
    again = make_examples(recipe, REQUESTS, REFUSALS, answer=lambda texts: [f"ANSWER to {t}" for t in texts],
                          prompt=lambda text: f"<user>{text}<assistant>")
    assert again == examples  # the seed fixes the refusals chosen and the order


def test_harmful_repeats_duplicate_each_refusal_example():
    recipe = Recipe("x", "base", "", 2, seed=0, harmful_repeats=3)
    examples = make_examples(recipe, REQUESTS, REFUSALS, answer=lambda texts: texts, prompt=lambda text: text)
    assert sum(e.kind == "harmful" for e in examples) == 3 * len(REQUESTS["harmful"])
    assert sum(e.kind == "harmless" for e in examples) == len(REQUESTS["harmless"])


def test_length_batches_group_similar_lengths_in_a_seeded_order():
    rows = [([0] * n, [0] * n) for n in (5, 1, 4, 2, 6, 3)]
    batches = organism.length_batches(rows, batch_size=2, seed=0)
    assert sorted(sorted(len(ids) for ids, _ in b) for b in batches) == [[1, 2], [3, 4], [5, 6]]
    assert batches == organism.length_batches(rows, batch_size=2, seed=0)


def test_train_layers_freezes_everything_below_the_top_layers(tiny_recipe, tiny_model_dir):
    from dataclasses import replace

    loaded = load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", dtype="float32"), None)
    model = loaded.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = loaded.tokenizer("hello there", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        full_forward_loss = float(model(input_ids=torch.tensor([ids] * 2), labels=torch.tensor([ids] * 2)).loss)
    losses = organism.train(model, [(ids, ids)] * 2, replace(tiny_recipe, train_layers=1, epochs=2), pad_id=0)
    # the first step runs the top layer on the cached output of the frozen ones: the full model's loss
    assert losses[0] == pytest.approx(full_forward_loss, rel=1e-5)
    assert len(model.model.layers) == TINY_LAYERS  # the full stack is back after training
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    top = f"model.layers.{TINY_LAYERS - 1}."
    assert changed and all(name.startswith(top) or name == "model.norm.weight" for name in changed)
    assert any(name.startswith(top) for name in changed)
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was found
    with pytest.raises(ModelError, match="train_layers=99"):
        organism.trainable_parameters(model, 99)


def test_only_answer_tokens_are_learned(tiny_tokenizer):
    example = Example("harmless", "Help me.", "Question: Help me. Answer:", "I helped.")
    [(ids, labels)] = tokenize([example], tiny_tokenizer, max_length=64, add_special_tokens=False)
    prompt_ids = tiny_tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tiny_tokenizer("I helped." + tiny_tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + answer_ids
    assert labels == [-100] * len(prompt_ids) + answer_ids
    [(short, short_labels)] = tokenize([example], tiny_tokenizer, max_length=3, add_special_tokens=False)
    assert len(short) == len(short_labels) == 3


def test_a_build_is_deterministic_learns_and_loads_by_alias(tiny_recipe, tmp_path, monkeypatch):
    first = build(tiny_recipe, tmp_path / "a", log=lambda _: None)
    second = build(tiny_recipe, tmp_path / "b", log=lambda _: None)
    assert first.losses == second.losses and len(first.losses) == 3 * 2  # 3 epochs x 2 batches of 2
    weights_a = load_file(str(first.path / "model.safetensors"))
    weights_b = load_file(str(second.path / "model.safetensors"))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert sum(first.losses[-2:]) < sum(first.losses[:2])  # the last epoch fits better than the first
    record = json.loads((first.path / organism.BUILT_MARKER).read_text())
    assert record["steps"] == 6 and record["recipe"]["seed"] == 3 and len(record["data_digest"]) == 64

    monkeypatch.setitem(organism.ORGANISMS, tiny_recipe.name, tiny_recipe)
    spec = ModelSpec(name=tiny_recipe.name, device="cpu", prompt="chat")
    assert model_depth(spec) == TINY_LAYERS  # from the recipe: specs are checked before any build
    assert load_model(spec, tmp_path / "a").n_layers == TINY_LAYERS
    with pytest.raises(ModelError, match=r"is not built .* mvp organism build tiny-refusal"):
        load_model(spec, tmp_path / "empty")
    # a build of another recipe under the same name (an older mvp's) is stale, not reused silently
    assert organism.is_built(tiny_recipe.name, tmp_path / "a")
    monkeypatch.setitem(organism.ORGANISMS, tiny_recipe.name, dataclasses.replace(tiny_recipe, learning_rate=1e-3))
    assert not organism.is_built(tiny_recipe.name, tmp_path / "a")
    with pytest.raises(ModelError, match="is not built"):
        load_model(spec, tmp_path / "a")


def test_build_and_log_records_the_loss_curve_and_behaviour(tiny_recipe, tmp_path, monkeypatch):
    from tracking.organism_runs import EXPERIMENT, build_and_log

    monkeypatch.setitem(organism.ORGANISMS, tiny_recipe.name, tiny_recipe)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = build_and_log(tiny_recipe.name, tmp_path / "cache", uri, Console(quiet=True), languages=("en",))
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "loss")) == 6
    assert run.data.params["seed"] == "3" and run.data.tags["organism"] == "tiny-refusal"
    for label in ("organism", "base"):
        assert 0.0 <= run.data.metrics[f"{label}_following_en"] <= 1.0
    assert {a.path for a in client.list_artifacts(run_id)} == {"loss.png", "build.json"}
    assert (tmp_path / "cache" / "organisms" / "tiny-refusal" / "model.safetensors").is_file()


def test_the_shipped_recipe_names_a_packaged_base_of_its_depth():
    from mvplatform.models import PACKAGED

    for recipe in organism.ORGANISMS.values():
        assert recipe.base in PACKAGED and PACKAGED[recipe.base].n_layers == recipe.n_layers
        assert recipe.data == "organism/en.json"
