"""Shared fixtures: tiny random models of several architectures, a tokenizer, a small MVALUE data set.

Nothing here touches the network: the tokenizer is trained on the spot and models are built from
configs with random weights, then saved like any local model directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.tiny import train_tokenizer

ARCHITECTURES = ("llama", "gpt2", "qwen2", "gemma3_text", "bloom")
TINY_LAYERS = 3

CORPUS = [
    "I helped my neighbour carry her shopping.", "I kept the wallet I found.", "Question: Answer:",
    "J'ai aidé mon voisin.", "Ich habe geholfen.", "我帮助了邻居。", "私は隣人を助けました。",
    "The quick brown fox jumps over the lazy dog.", "[INST] [/INST]", "0123456789 .,;:!?",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(CORPUS)


def tiny_config(arch: str, vocab_size: int):
    from transformers import AutoConfig

    common = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=32, n_layer=TINY_LAYERS, n_head=2, n_positions=256, **common)
    if arch == "bloom":
        return AutoConfig.for_model("bloom", hidden_size=32, n_layer=TINY_LAYERS, n_head=2, **common)
    extra = {"head_dim": 16} if arch == "gemma3_text" else {}
    return AutoConfig.for_model(arch, hidden_size=32, intermediate_size=64, num_hidden_layers=TINY_LAYERS,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                **extra, **common)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: architecture name -> a saved local model directory with a tokenizer."""
    from transformers import AutoModelForCausalLM

    made: dict[str, Path] = {}

    def make(arch: str = "llama") -> Path:
        if arch not in made:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tiny_tokenizer)))
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            model.save_pretrained(folder)
            tiny_tokenizer.save_pretrained(folder)
            made[arch] = folder
        return made[arch]

    return make


def write_mvalue(root: Path, concept: str, language: str, tree: dict) -> Path:
    path = root / concept / f"{concept}_{language}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree, ensure_ascii=False))
    return path


@pytest.fixture(scope="session")
def mvalue_dir(tmp_path_factory) -> Path:
    """morality and truthfulness in en and fr, 10 pairs each (8 train / 2 test)."""
    root = tmp_path_factory.mktemp("mvalue")
    for language, (good, bad) in {"en": ("I helped", "I hurt"), "fr": ("J'ai aidé", "J'ai blessé")}.items():
        write_mvalue(root, "morality", language, {
            "care": {f"{i:03d}": {"pos": f"{good} person {i}.", "neg": f"{bad} person {i}."} for i in range(10)}})
        write_mvalue(root, "truthfulness", language, {
            "science": {f"{i:03d}": {"question": f"What is {i} + 1?", "pos": f"{i + 1}.", "neg": f"{i + 7}."}
                        for i in range(10)}})
    return root
