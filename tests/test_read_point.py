"""One read point, named (issue 23): ``extract.read: hidden_states | block_output``.

On a tiny LLaMA (it has a final RMSNorm), ``hidden_states`` and ``block_output`` agree at layers
1..L-1 and differ at the last layer, where ``hidden_states`` is the final norm of the block output.
Steering writes at the block output, so its ``state_norm`` scale is measured there under either
read point.
"""

import numpy as np
import pytest
import torch

from mvplatform.activations import last_token_reads
from mvplatform.control import steering_vectors
from mvplatform.data import ContrastPair, PairSplit
from mvplatform.extraction import PairStates, compute_states, recognise
from mvplatform.models import load_model
from mvplatform.spec import ExtractSpec, ModelSpec, parse_spec
from tests.conftest import TINY_LAYERS

TEXTS = ["I helped my neighbour.", "I kept the wallet I found and spent the money on myself.", "Ok.",
         "Question: Is it 2? Answer: 3."]
PAIRS = [ContrastPair(str(i), pos, neg) for i, (pos, neg) in enumerate([
    ("I helped my neighbour.", "I robbed my neighbour."), ("I told the truth.", "I lied to my friend about the money."),
    ("I shared my food.", "I kept it all."), ("Ok, I returned it.", "No.")])]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", prompt="plain"))


def test_block_output_differs_from_hidden_states_only_at_the_last_layer(loaded):
    layers = list(range(1, TINY_LAYERS + 1))
    hidden = last_token_reads(loaded, TEXTS, layers, batch_size=3, read="hidden_states")
    block = last_token_reads(loaded, TEXTS, layers, batch_size=3, read="block_output")
    np.testing.assert_allclose(block.states[:, :-1], hidden.states[:, :-1], atol=1e-5)  # layers 1..L-1 agree
    assert np.abs(block.states[:, -1] - hidden.states[:, -1]).max() > 0.1  # the last layer does not
    # hidden_states[-1] is the model's final norm applied to the last block's output
    with torch.no_grad():
        normed = loaded.model.model.norm(torch.from_numpy(block.states[:, -1])).numpy()
    np.testing.assert_allclose(normed, hidden.states[:, -1], atol=1e-5)
    # the write-point norms are the block outputs' norms, whatever is read
    np.testing.assert_allclose(hidden.write_norms, np.linalg.norm(block.states, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(block.write_norms, hidden.write_norms, rtol=1e-6)


def test_block_output_is_what_a_hook_on_the_last_block_sees(loaded):
    seen = {}
    handle = loaded.layers[-1].register_forward_hook(lambda _m, _i, out: seen.update(h=out[0] if isinstance(out, tuple)
                                                                                     else out))
    try:
        ids = loaded.tokenizer(TEXTS[1], return_tensors="pt")
        with torch.no_grad():
            loaded.model(**ids)
    finally:
        handle.remove()
    block = last_token_reads(loaded, TEXTS[1:2], [TINY_LAYERS], read="block_output")
    np.testing.assert_allclose(block.states[0, 0], seen["h"][0, -1].numpy(), atol=1e-5)


def test_last_layer_vector_and_steering_scale_come_from_the_block_output(loaded):
    split = PairSplit(PAIRS[:3], PAIRS[3:])
    by_read = {}
    for read in ("hidden_states", "block_output"):
        extract = ExtractSpec(read=read, intervals=False)
        by_read[read] = (compute_states(loaded, split, extract), recognise(
            compute_states(loaded, split, extract), "m", "morality", "en", extract).vectors)
    (h_states, h_vectors), (b_states, b_vectors) = by_read["hidden_states"], by_read["block_output"]
    assert b_states.read == "block_output" and h_states.read == "hidden_states"
    # block_output: the last layer's direction is the mean difference of block outputs over the 3 training pairs
    expected = (b_states.pos[:3, -1] - b_states.neg[:3, -1]).mean(axis=0)
    np.testing.assert_allclose(b_vectors.directions[-1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_vectors.directions[:-1], h_vectors.directions[:-1], atol=1e-5)
    cosine = float(h_vectors.directions[-1] @ b_vectors.directions[-1]
                   / np.linalg.norm(h_vectors.directions[-1]) / np.linalg.norm(b_vectors.directions[-1]))
    assert cosine < 0.999  # hidden_states[-1] is after the final norm: another direction
    # steering's scale is the block outputs' mean norm under both read points
    block_norm = np.linalg.norm(np.concatenate([b_states.pos[:3], b_states.neg[:3]]), axis=-1).mean(axis=0)
    np.testing.assert_allclose(b_vectors.norms, block_norm, rtol=1e-5)
    np.testing.assert_allclose(h_vectors.norms, block_norm, rtol=1e-5)
    normed_norm = np.linalg.norm(np.concatenate([h_states.pos[:3], h_states.neg[:3]]), axis=-1).mean(axis=0)
    assert abs(normed_norm[-1] - block_norm[-1]) > 0.05 * block_norm[-1]  # the norm at the read point is not it
    vector = steering_vectors(b_vectors, "state_norm")[TINY_LAYERS]
    assert np.linalg.norm(vector) == pytest.approx(block_norm[-1], rel=1e-5)


def test_write_norms_set_the_scale_by_hand():
    # 2 training pairs, 1 test pair, 1 layer; directions from the states, scale from the write-point norms
    pos = np.array([[[3.0, 4.0]], [[1.0, 0.0]], [[0.0, 1.0]]], dtype=np.float32)
    neg = np.zeros_like(pos)
    pos_norms = np.array([[10.0], [20.0], [99.0]], dtype=np.float32)
    neg_norms = np.array([[30.0], [40.0], [99.0]], dtype=np.float32)
    with_norms = recognise(PairStates(pos, neg, 2, [1], 0.0, pos_norms, neg_norms), "m", "c", "en",
                           ExtractSpec(intervals=False)).vectors
    np.testing.assert_allclose(with_norms.directions, [[2.0, 2.0]])  # mean of (3, 4) and (1, 0)
    np.testing.assert_allclose(with_norms.norms, [25.0])  # mean of 10, 20, 30, 40 (test pair left out)
    without = recognise(PairStates(pos, neg, 2, [1]), "m", "c", "en", ExtractSpec(intervals=False)).vectors
    np.testing.assert_allclose(without.norms, [1.5])  # states saved before norms were kept: (5 + 1 + 0 + 0) / 4


def test_pair_states_round_trip_keeps_norms_and_read_point(tmp_path):
    pos = np.ones((2, 1, 2), dtype=np.float32)
    states = PairStates(pos, -pos, 1, [1], 0.0, np.array([[1.0], [2.0]], np.float32),
                        np.array([[3.0], [4.0]], np.float32), "block_output")
    states.save(tmp_path / "s.safetensors")
    back = PairStates.load(tmp_path / "s.safetensors")
    assert back.read == "block_output"
    np.testing.assert_array_equal(back.neg_norms, [[3.0], [4.0]])
    PairStates(pos, -pos, 1, [1]).save(tmp_path / "old.safetensors")
    old = PairStates.load(tmp_path / "old.safetensors")
    assert old.pos_norms is None and old.read == "hidden_states"


def test_read_point_is_a_spec_field_and_part_of_the_state_key():
    from mvplatform.inputs import PreparedData, item_state_key
    from mvplatform.spec import expand

    assert parse_spec("{}").extract.read == "hidden_states"
    with pytest.raises(Exception, match="block_output"):
        parse_spec("extract:\n  read: residual\n")
    keys = set()
    for read in ("hidden_states", "block_output"):
        spec = parse_spec(f"data: {{concepts: [morality], languages: [en]}}\nextract:\n  read: {read}\n")
        item = expand(spec)[0]
        data = PreparedData(splits={}, digests={("morality", "en"): "ab12"})
        keys.add(item_state_key(spec, data, item, {"name": "m"}, on_gpu=False))
    assert len(keys) == 2
