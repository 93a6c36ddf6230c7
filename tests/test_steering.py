"""Steering hooks and steered generation on tiny random models: exact layers, rows and positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mvplatform.generation import generate
from mvplatform.models import load_model
from mvplatform.spec import ControlSpec, GenerationSpec, ModelSpec
from mvplatform.steering import OPERATORS, Steering, linear_comb, piecewise_linear, steer

ARCHS = ("llama", "gpt2", "qwen2", "gemma3_text", "bloom")


@pytest.fixture(scope="module")
def loaded_models(tiny_model_dir):
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(ModelSpec(name=str(tiny_model_dir(arch)), device="cpu", prompt="chat"))
        return cache[arch]

    return get


def test_spec_takes_the_registered_operators():
    assert OPERATORS.names() == ["linear_comb", "piecewise_linear"]
    assert ControlSpec(operator="piecewise_linear").operator == "piecewise_linear"
    with pytest.raises(ValidationError, match="unknown steering operator 'linear' .did you mean 'linear_comb'"):
        ControlSpec(operator="linear")


def test_operators_match_hand_computed_values():
    h = torch.tensor([[[1.0, 2.0], [-3.0, 1.0]]])  # [1, 2, 2]
    v = torch.tensor([1.0, 1.0])
    c = torch.tensor([[[2.0], [0.5]]])
    assert linear_comb(h, v, c).tolist() == [[[3.0, 4.0], [-2.5, 1.5]]]
    # <h, v> = 3 (positive) and -2 (negative): the second position is pushed the other way.
    assert piecewise_linear(h, v, c).tolist() == [[[3.0, 4.0], [-3.5, 0.5]]]


def _block_outputs(loaded, ids, mask, context=None):
    """Hidden state after every decoder block, optionally inside a steering context."""
    outputs = {}
    with torch.inference_mode(), (context or _null()):  # steering hooks first, so the recorders see their result
        handles = [block.register_forward_hook(
            lambda _m, _i, out, k=k: outputs.__setitem__(k, (out[0] if isinstance(out, tuple) else out).clone()))
            for k, block in enumerate(loaded.layers, start=1)]
        try:
            loaded.model(input_ids=ids, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
    return outputs


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_change_exactly_the_chosen_layer_rows_and_real_positions(arch, loaded_models):
    loaded = loaded_models(arch)
    hidden = loaded.model.config.get_text_config().hidden_size
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])  # row 0 left-padded (pad id 0)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    vector = np.ones(hidden, dtype=np.float32)
    steering = Steering({2: vector})
    plain = _block_outputs(loaded, ids, mask)
    steered = _block_outputs(loaded, ids, mask, steer(loaded, steering, np.array([[3.0], [0.0]])))
    assert torch.equal(plain[1], steered[1])  # before the steered layer: untouched
    # Layer 2, row 0, real positions: exactly h + 3 v; padding and the zero-coefficient row: untouched.
    torch.testing.assert_close(steered[2][0, 2:], plain[2][0, 2:] + 3.0, rtol=0, atol=1e-5)
    assert torch.equal(steered[2][0, :2], plain[2][0, :2])
    assert torch.equal(steered[2][1], plain[2][1])
    assert not torch.allclose(steered[3][0, 2:], plain[3][0, 2:])  # later layers see the change
    # Hooks are gone after the block.
    assert torch.equal(_block_outputs(loaded, ids, mask)[2], plain[2])


def test_hooks_are_removed_when_the_forward_raises(loaded_models):
    loaded = loaded_models("llama")
    before = [len(block._forward_hooks) for block in loaded.layers], len(loaded.model._forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(loaded, Steering({1: np.ones(32, np.float32), 3: np.ones(32, np.float32)}), np.ones((1, 2))):
            raise RuntimeError("boom")
    assert ([len(block._forward_hooks) for block in loaded.layers], len(loaded.model._forward_pre_hooks)) == before


def test_normalize_keeps_the_norm_of_each_steered_state(loaded_models):
    loaded = loaded_models("llama")
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    plain = _block_outputs(loaded, ids, mask)
    steering = Steering({1: np.ones(32, np.float32)}, normalize=True)
    steered = _block_outputs(loaded, ids, mask, steer(loaded, steering, np.array([[5.0]])))
    torch.testing.assert_close(steered[1].norm(dim=-1), plain[1].norm(dim=-1))
    assert not torch.allclose(steered[1], plain[1])


def test_bad_layers_and_coefficient_shapes_are_refused(loaded_models):
    loaded = loaded_models("llama")
    with pytest.raises(ValueError, match="outside the model"):
        with steer(loaded, Steering({9: np.ones(32, np.float32)}), np.ones((1, 1))):
            pass
    with pytest.raises(ValueError, match="coefficients must be"):
        with steer(loaded, Steering({1: np.ones(32, np.float32)}), np.ones((1, 2))):
            pass
    with pytest.raises(KeyError, match="unknown steering operator"):
        Steering({1: np.ones(2)}, operator="rotate")


PROMPTS = ["I helped my neighbour.", "The quick brown fox", "J'ai aidé mon voisin."]


def _seen_positions(loaded, positions: str) -> list[list[float]]:
    """Per forward call of a generation, the steering mask row 0 got (1 = steered)."""
    steering = Steering({1: np.zeros(32, np.float32) + 1e-3}, positions=positions)
    seen = []
    from mvplatform import steering as steering_module

    real_hook = steering_module._block_hook

    def recording_hook(operator, vector, coefficient, tracker, normalize):
        inner = real_hook(operator, vector, coefficient, tracker, normalize)

        def hook(module, inputs, output):
            seen.append(tracker.active[0, :, 0].tolist())
            return inner(module, inputs, output)

        return hook

    steering_module._block_hook = recording_hook
    try:
        generate(loaded, PROMPTS[:1], GenerationSpec(max_new_tokens=3), steering, np.ones((1, 1)))
    finally:
        steering_module._block_hook = real_hook
    return seen


def test_positions_select_prompt_or_generated_tokens(loaded_models):
    loaded = loaded_models("llama")
    prefill_all, *steps_all = _seen_positions(loaded, "all")
    prefill_prompt, *steps_prompt = _seen_positions(loaded, "prompt")
    prefill_gen, *steps_gen = _seen_positions(loaded, "generated")
    assert all(x == 1.0 for x in prefill_all) and all(s == [1.0] for s in steps_all)
    assert prefill_prompt == prefill_all and all(s == [0.0] for s in steps_prompt)
    assert all(x == 0.0 for x in prefill_gen) and all(s == [1.0] for s in steps_gen)
    assert len(steps_all) == 2  # 3 new tokens: one prefill and two decoding steps


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_trial_in_a_batch_of_trials_equals_the_trial_alone(arch, loaded_models):
    loaded = loaded_models(arch)
    hidden = loaded.model.config.get_text_config().hidden_size
    rng = np.random.default_rng(0)
    steering = Steering({1: rng.normal(size=hidden).astype(np.float32),
                         2: rng.normal(size=hidden).astype(np.float32)})
    settings = GenerationSpec(max_new_tokens=6, batch_size=64)
    trials = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, -4.0], [2.0, 2.0]])  # [trial, layer] coefficients
    alone = [generate(loaded, PROMPTS, settings, steering, np.repeat(trials[[t]], len(PROMPTS), 0)).texts
             for t in range(len(trials))]
    rows = [(p, t) for p in range(len(PROMPTS)) for t in range(len(trials))]  # instruction-major, as search does
    batched = generate(loaded, [PROMPTS[p] for p, _ in rows], settings, steering,
                       np.stack([trials[t] for _, t in rows]))
    for (p, t), text in zip(rows, batched.texts):
        assert text == alone[t][p]
    unsteered = generate(loaded, PROMPTS, settings).texts
    assert alone[0] == unsteered  # zero coefficients are no steering
    assert any(alone[t] != unsteered for t in (1, 2, 3))  # and real coefficients do change the output


def test_generation_restores_padding_side_and_counts_tokens(loaded_models):
    loaded = loaded_models("llama")
    loaded.tokenizer.padding_side = "right"
    out = generate(loaded, PROMPTS, GenerationSpec(max_new_tokens=4, batch_size=2))
    assert loaded.tokenizer.padding_side == "right"
    assert len(out.texts) == 3 and out.forward_batches == 2
    assert 3 <= out.new_tokens <= 12 and all(1 <= n <= 4 for n in out.per_row_tokens)
