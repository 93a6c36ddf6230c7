"""Model loading, prompts, decoder-layer discovery and padding-invariant extraction on tiny models."""

import numpy as np
import pytest
import torch

from mvplatform.activations import last_token_states
from mvplatform.errors import ModelError
from mvplatform.models import decoder_layers, load_model, make_prompter
from mvplatform.spec import ModelSpec
from tests.conftest import ARCHITECTURES, TINY_LAYERS

TEXTS = ["I helped my neighbour.", "I kept the wallet I found and spent the money on myself.", "Ok.",
         "Question: Is it 2? Answer: 3.", "我帮助了邻居。"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoder_layers_are_found_without_per_architecture_code(tiny_model_dir, arch):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir(arch)), device="cpu"))
    assert loaded.n_layers == TINY_LAYERS
    assert loaded.layers is decoder_layers(loaded.model)
    expected = loaded.model.transformer.h if arch in ("gpt2", "bloom") else loaded.model.model.layers
    assert loaded.layers is expected


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom", "gemma3_text"])
def test_left_and_right_padding_give_the_same_states_as_unbatched(tiny_model_dir, arch):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir(arch)), device="cpu", prompt="plain"))
    layers = list(range(1, TINY_LAYERS + 1))
    states = {}
    for side in ("left", "right"):
        loaded.tokenizer.padding_side = side
        states[side] = last_token_states(loaded, TEXTS, layers, batch_size=len(TEXTS))
    alone = np.concatenate([last_token_states(loaded, [t], layers) for t in TEXTS])
    np.testing.assert_allclose(states["left"], states["right"], atol=1e-5)
    np.testing.assert_allclose(states["right"], alone, atol=1e-5)
    assert states["left"].shape == (len(TEXTS), TINY_LAYERS, 32)


def test_states_are_the_last_real_tokens_hidden_states(tiny_model_dir):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", prompt="plain"))
    states = last_token_states(loaded, TEXTS[:2], [1, 3], batch_size=2)
    ids = loaded.tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.model(**ids, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(states[1, 0], hidden[1][0, -1].numpy(), atol=1e-5)
    np.testing.assert_allclose(states[1, 1], hidden[3][0, -1].numpy(), atol=1e-5)
    before_last = last_token_states(loaded, TEXTS[1:2], [3], token=-2)
    np.testing.assert_allclose(before_last[0, 0], hidden[3][0, -2].numpy(), atol=1e-5)


def test_prompt_modes(tiny_tokenizer):
    assert make_prompter("auto", tiny_tokenizer, "m").format("hi") == "<s>[INST] hi [/INST] "
    assert make_prompter("plain", tiny_tokenizer, "m").format("hi") == "hi"
    assert make_prompter("Q: {input} A:", tiny_tokenizer, "m").format("{x}") == "Q: {x} A:"
    assert not make_prompter("chat", tiny_tokenizer, "m").add_special_tokens


def test_chat_prompt_without_a_template_is_refused(tiny_tokenizer):
    class Bare:
        chat_template = None

    assert make_prompter("auto", Bare(), "m").mode == "plain"
    with pytest.raises(ModelError, match="no chat template"):
        make_prompter("chat", Bare(), "m")


def test_missing_model_paths_are_refused_clearly(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelSpec(name=str(tmp_path / "nowhere")))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(ModelSpec(name=str(tmp_path)))


def test_cuda_device_without_a_gpu_is_refused(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="sees no CUDA GPU"):
        load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cuda"))


def test_device_map_auto_loads_and_steers_across_placed_layers(tiny_model_dir):
    """device_map: auto goes through accelerate's placement (all on CPU here; GPUs on a cluster)."""
    import numpy as np

    from mvplatform.generation import generate
    from mvplatform.models import load_model
    from mvplatform.spec import GenerationSpec, ModelSpec
    from mvplatform.steering import Steering

    spec = ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", device_map="auto", prompt="chat")
    loaded = load_model(spec)
    assert loaded.device.type == "cpu"  # the embeddings' device (one device here: no GPUs)
    plain = load_model(ModelSpec(name=spec.name, device="cpu", prompt="chat"))
    settings = GenerationSpec(max_new_tokens=4)
    steering = Steering({2: np.ones(32, np.float32)})
    mapped = generate(loaded, ["I helped my neighbour."], settings, steering, np.array([[2.0]])).texts
    assert mapped == generate(plain, ["I helped my neighbour."], settings, steering, np.array([[2.0]])).texts
