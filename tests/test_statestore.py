"""The result store: one content key, atomic writes, JSON records next to the hidden states."""

import numpy as np

from mvplatform.statestore import StateStore, array_digest, content_key, state_key


def test_state_keys_are_unchanged_so_stored_states_stay_valid():
    # sha256 of {"data": "ab12", "format": 1, "model": {"model": "m"}, "params": {"seed": 1}} (sorted keys),
    # as every earlier release computed it
    assert state_key({"model": "m"}, "ab12", {"seed": 1}) == "d2352ee95c4d8919e0f7c19c"


def test_content_key_ignores_key_order_and_sees_array_contents():
    assert content_key({"a": 1, "b": [2, 3]}) == content_key({"b": [2, 3], "a": 1})
    assert len(content_key("x", 12)) == 12
    one, same, other = np.array([1.0, 2.0]), np.array([1.0, 2.0], dtype=np.float64), np.array([1.0, 2.5])
    assert array_digest(one) == array_digest(same) != array_digest(other)
    assert array_digest(None) is None


def test_records_round_trip_atomically_and_a_damaged_one_reads_as_missing(tmp_path):
    store = StateStore(tmp_path)
    assert store.get_record("control", "k1") is None
    path = store.put_record("control", "k1", {"rate": 0.5, "text": "réponse"})
    assert path == tmp_path / "control" / "k1.json"
    assert store.get_record("control", "k1") == {"rate": 0.5, "text": "réponse"}
    assert [p.name for p in path.parent.iterdir()] == ["k1.json"]  # no temporary file left behind
    path.write_text('{"rate": 0.')  # a torn write from an older version
    assert store.get_record("control", "k1") is None
    assert store.study_path("s-1") == tmp_path / "studies" / "s-1.journal"
