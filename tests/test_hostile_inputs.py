"""Hostile but realistic inputs (issue 24): refused with exit 2 and a message naming where and what
to fix; no traceback, no write outside the store, no model code run without a real yes, and the
loader's work bounded whatever the input."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mvplatform.cli import main
from mvplatform.data import load_instructions, read_json, read_pairs
from mvplatform.errors import DataError, SpecError, TrackingError
from mvplatform.spec import MAX_SPEC_NODES, load_spec, parse_spec
from tests.conftest import write_mvalue
from tests.test_malformed_inputs import assert_spec_refused
from tracking.store import artifact_location

BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9 if i else ['x'] * 9)}]\n" for i in range(9)) + "name: [*l8]\n"



@pytest.fixture(autouse=True)
def wide_terminal_and_private_store(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


SPEC_CASES = [
    # (case, spec text, pattern the message must match)
    ("experiment as a relative path", "tracking: {experiment: ../../etc}\n",
     r"spec.yaml:1: tracking.experiment: must be a name, not a path"),
    ("experiment as an absolute path", "tracking: {experiment: /tmp/elsewhere}\n",
     r"tracking.experiment: must be a name, not a path"),
    ("name as a path", "name: ../up\n", r"spec.yaml:1: name: must be a name, not a path"),
    ("10,000-character name", f"name: {'a' * 10_000}\n", r"name: String should have at most 100 characters"),
    ("trust_remote_code as a string", "model: {name: x, trust_remote_code: 'yes'}\n",
     r"model.trust_remote_code: a switch takes a YAML boolean: write true or false, without quotes \(got 'yes'\)"),
    ("sandbox as a string", "data: {sandbox: 'true'}\n", r"data.sandbox: a switch takes a YAML boolean"),
    ("duplicate top-level key", "name: a\ndata: {seed: 1}\nname: b\n",
     r"spec.yaml:3: duplicate key 'name' \(first at line 1\)"),
    ("duplicate nested key", "data:\n  languages: [en, fr]\n  languages: [sw]\n", r"spec.yaml:3: duplicate key 'languages'"),
    ("alias bomb", BOMB, rf"more than {MAX_SPEC_NODES:,} values .*alias bomb"),
    ("recursive alias", "data: &a {nested: *a}\n", r"spec.yaml:1: a YAML alias refers to its own anchor"),
    ("deep nesting", "name: " + "[" * 50_000 + "]" * 50_000 + "\n", r"nested too deeply"),
    ("huge spec", "name: x\n" + "#" * 1_100_000 + "\n", r"more than the limit of 1,000,000"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_hostile_spec_is_refused_with_a_located_message(tmp_path, case, text, pattern):
    assert_spec_refused(tmp_path, text, pattern)


def test_a_real_yaml_boolean_still_opts_in():
    assert parse_spec("model: {name: x, trust_remote_code: true}").models[0].trust_remote_code is True
    assert parse_spec("data: {sandbox: false}").data.sandbox is False


def test_a_long_language_list_is_checked_in_linear_time():
    """100,000 entries: the duplicate check once took minutes (quadratic); now it names the duplicate."""
    languages = ["en", "fr"] + ["sw"] * 49_999
    with pytest.raises(SpecError, match="language sw listed twice"):
        parse_spec(json.dumps({"data": {"languages": languages}}))


def test_a_non_utf8_spec_names_the_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1.yaml:2: the spec is not UTF-8 .*save the file as UTF-8"):
        load_spec(path)


def test_artifacts_never_leave_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert artifact_location(uri, "my-study") == (tmp_path / "mlruns" / "my-study").resolve().as_uri()
    for bad in ("../../etc", "/etc", "a/b", "..", ""):
        with pytest.raises(TrackingError, match="not a plain name"):
            artifact_location(uri, bad)


@pytest.fixture
def model_with_its_own_code(tmp_path) -> Path:
    """A local model folder whose config class is custom code that leaves a mark when it runs."""
    folder = tmp_path / "custom-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "mvp-custom-net", "num_hidden_layers": 4,
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (folder / "configuration_custom.py").write_text(textwrap.dedent("""
        import pathlib
        pathlib.Path(__file__).with_name("CODE_RAN").write_text("yes")
        from transformers import PretrainedConfig
        class CustomConfig(PretrainedConfig):
            model_type = "mvp-custom-net"
    """))
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


def _deep_spec(tmp_path: Path, model: Path, trust: bool) -> Path:
    spec = tmp_path / "custom.yaml"
    spec.write_text(f"name: custom\nmodel: {{name: '{model}', trust_remote_code: {str(trust).lower()}}}\n"
                    "data: {concepts: [morality], languages: [en]}\nanalyses: [recognition]\n")
    return spec


def test_validate_deep_never_runs_model_code_even_when_trusted(tmp_path, model_with_its_own_code, capsys):
    assert main(["validate", "--deep", str(_deep_spec(tmp_path, model_with_its_own_code, True))]) == 0
    assert "4 decoder layers" in capsys.readouterr().out
    assert not (model_with_its_own_code / "CODE_RAN").exists()


def test_model_code_without_the_switch_is_refused_naming_it(tmp_path, model_with_its_own_code, capsys):
    assert main(["validate", "--deep", str(_deep_spec(tmp_path, model_with_its_own_code, False))]) == 2
    err = capsys.readouterr().err
    assert "model.trust_remote_code: true" in err and "Traceback" not in err
    assert not (model_with_its_own_code / "CODE_RAN").exists()


# --- data files ---------------------------------------------------------------------------------


def test_duplicate_json_keys_are_refused(tmp_path):
    path = tmp_path / "morality" / "morality_en.json"
    path.parent.mkdir()
    path.write_text('{"g": {"001": {"pos": "a", "neg": "b"}, "001": {"pos": "c", "neg": "d"}}}')
    with pytest.raises(DataError, match=r"morality_en.json: duplicate key '001'.*give each group and id its own key"):
        read_pairs(tmp_path, "morality", "en")


def test_deeply_nested_json_is_refused_without_a_traceback(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        read_json(path)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "en.json"
    path.write_text('{"harmful": {"001": "x"},\n "harmless": {"001": "y",}}')
    with pytest.raises(DataError, match=r"en.json:2:\d+: not valid JSON"):
        load_instructions("en", source=str(tmp_path))


def test_repeated_pairs_are_dropped_so_none_sits_in_train_and_test(tmp_path, caplog):
    tree = {"g": {f"{i:03d}": {"pos": "same good", "neg": "same bad"} for i in range(20)}}
    tree["g"]["100"] = {"pos": "other good", "neg": "other bad"}
    write_mvalue(tmp_path, "morality", "en", tree)
    pairs = read_pairs(tmp_path, "morality", "en")
    assert [p.key for p in pairs] == ["g/000", "g/100"]
    assert "19 pair(s) repeat an earlier pair" in caplog.text


# --- bounded work, in a separate process with a memory cap --------------------------------------


@pytest.mark.parametrize("text", [BOMB, "name: " + "[" * 200_000 + "]" * 200_000 + "\n",
                                  "data:\n  languages: [" + ", ".join(["en"] * 100_000) + "]\n"],
                         ids=["alias bomb", "deep nesting", "100k-entry list"])
def test_validate_finishes_in_bounded_time_and_memory(tmp_path, text):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)

    def cap_memory() -> None:  # 2 GiB of address space: the alias bomb once grew to 6 GB
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run([sys.executable, "-m", "mvplatform.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=120, preexec_fn=cap_memory, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


# --- submit and validate --deep: refused before any model work ---------------------------------


def _spec(tmp_path: Path, model: str, data: Path | str = "builtin:values", extra: str = "") -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\nmodel: {model}\ndata: {{dataset: '{data}', concepts: [morality], languages: [en]}}\n"
                    f"analyses: [recognition]\nresults: {{dir: '{tmp_path / 'results'}'}}\n{extra}")
    return spec


def test_a_huge_text_is_refused_at_validate_naming_the_pair(tmp_path, capsys):
    tree = {"g": {f"{i:03d}": {"pos": f"good {i}", "neg": f"bad {i}"} for i in range(20)}}
    tree["g"]["007"]["neg"] = "x " * 500_000
    write_mvalue(tmp_path / "data", "morality", "en", tree)
    assert main(["validate", "--deep", str(_spec(tmp_path, "gemma3-270m", tmp_path / "data"))]) == 2
    err = capsys.readouterr().err
    assert "morality_en.json: pair g/007 neg: the text has 1,000,000 characters" in err
    assert "data.max_input_chars" in err and not (tmp_path / "results").exists()


def test_weak_data_gets_warnings_at_validate(tmp_path, capsys):
    tree = {"g": {f"{i:03d}": {"pos": f"good {i}", "neg": f"bad {i}"} for i in range(20)}}
    tree["g"]["003"]["pos"] = "\u6211\u5e2e\u52a9\u4e86\u4ed6"  # Chinese in an English file
    write_mvalue(tmp_path / "data", "morality", "en", tree)
    assert main(["validate", "--deep", str(_spec(tmp_path, "gemma3-270m", tmp_path / "data"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "only 4 test pair(s) (fewer than 10)" in out
    assert "1 text(s) not written in en's script (first: pair g/003 pos)" in out


@pytest.mark.parametrize("damage", ["config only", "truncated safetensors"])
def test_a_broken_model_folder_is_refused_before_ray(tmp_path, tiny_model_dir, capsys, damage):
    folder = tmp_path / "broken"
    folder.mkdir()
    source = tiny_model_dir("llama")
    (folder / "config.json").write_bytes((source / "config.json").read_bytes())
    if damage == "truncated safetensors":
        weights = (source / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert main(["validate", "--deep", str(_spec(tmp_path, f"'{folder}'"))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert ("has a config but no weights" if damage == "config only" else "damaged safetensors file") in err
    assert "Traceback" not in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_ray(tmp_path, capsys):
    assert main(["submit", str(_spec(tmp_path, "{name: gemma3-270m, device: cuda}"))]) == 2
    assert "model.device: cuda asked for, but this machine has 0 CUDA GPU(s)" in " ".join(capsys.readouterr().err.split())


def test_a_second_submission_of_the_same_spec_is_refused(tmp_path, capsys):
    """The first holds the lock (here a separate process); the second exits 2 at once, logging nothing."""
    from mvplatform.statestore import StateStore
    from tracking.store import resolve_tracking_uri

    spec = _spec(tmp_path, "gemma3-270m")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mvplatform.statestore import StateStore
        with StateStore(Path({str(tmp_path / 'results')!r})).submission_lock("s", {resolve_tracking_uri()!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["submit", str(spec)]) == 2
        assert "another `mvp submit` of spec 's'" in " ".join(capsys.readouterr().err.split())
    finally:
        holder.kill()
        holder.wait()
    with StateStore(tmp_path / "results").submission_lock("s", resolve_tracking_uri()):
        pass  # released when its holder died


def test_ui_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ui", "--port", "99999"])
    assert exit_.value.code == 2
    assert "'99999' is not a TCP port; use a number from 1 to 65535" in capsys.readouterr().err


def test_init_with_one_language_writes_a_valid_spec(tmp_path, capsys):
    output = tmp_path / "one.yaml"
    assert main(["init", "one", "--languages", "en", "-o", str(output)]) == 0
    assert load_spec(output).analyses == ["recognition"]


def process_groups_under(pid: int) -> set[int]:
    """The process groups of ``pid`` and all its descendants (``mvp ui`` puts MLflow's server in its own)."""
    rows = [tuple(map(int, line.split())) for line in
            subprocess.run(["ps", "-eo", "pid=,ppid=,pgid="], capture_output=True, text=True, check=True).stdout.splitlines()]
    tree = {pid}
    while more := {p for p, parent, _ in rows if parent in tree} - tree:
        tree |= more
    return {group for p, _, group in rows if p in tree}


def test_ui_stopped_with_sigterm_leaves_nothing_serving(tmp_path):
    """mvp ui runs MLflow's server in its own process group and stops the whole group.

    Pass or fail, the test then kills every process group it saw under ``mvp ui`` (its own, started in a
    new session, and the server's), so a failing run leaves no server behind on the port.
    """
    import contextlib
    import signal
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ui.db'}"}
    ui = subprocess.Popen([sys.executable, "-m", "mvplatform.cli", "ui", "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    groups = {ui.pid}  # start_new_session: the ui's process group id is its pid

    def serving() -> bool:
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    try:
        deadline = time.monotonic() + 300  # MLflow's UI took 129 s to answer at load 19 on 2 cores
        while not serving() and ui.poll() is None and time.monotonic() < deadline:
            groups |= process_groups_under(ui.pid)
            time.sleep(0.5)
        groups |= process_groups_under(ui.pid)
        assert serving(), "the MLflow UI did not start"
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        time.sleep(1)
        assert not serving()
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        ui.wait(timeout=30)


@pytest.fixture
def read_only(tmp_path):
    """Bind-mounts a path read-only (root ignores permission bits, so chmod proves nothing here)."""
    mounted: list[Path] = []

    def make(path: Path) -> Path:
        done = subprocess.run(f"mount --bind '{path}' '{path}' && mount -o remount,bind,ro '{path}'", shell=True,
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("needs permission to bind-mount read-only")
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_store_is_refused_at_once(tmp_path, read_only):
    from tracking.store import check_store

    database = tmp_path / "store" / "mlflow.db"
    check_store(f"sqlite:///{database}")  # created, writable
    read_only(database)
    with pytest.raises(TrackingError, match=r"mlflow.db cannot be written \(attempt to write a readonly database\)"):
        check_store(f"sqlite:///{database}")
    folder = tmp_path / "empty"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(TrackingError, match="cannot be written .*Read-only file system"):
        check_store(f"sqlite:///{folder / 'mlflow.db'}")


@pytest.mark.parametrize("uri", ["::garbage::", "ftp://example/x", "mlruns"])
def test_a_garbage_tracking_uri_is_named(uri):
    from tracking.store import check_store

    with pytest.raises(TrackingError, match=r"is not an MLflow tracking URI .*use sqlite:///"):
        check_store(uri)


def test_empty_sides_are_dropped_counted_and_reported_before_any_model(tmp_path):
    from mvplatform.inputs import prepare_data

    tree = {"g": {f"{i:03d}": {"pos": f"good {i}", "neg": f"bad {i}"} for i in range(60)}}
    tree["g"]["005"]["pos"] = ""
    tree["g"]["006"].pop("neg")
    write_mvalue(tmp_path / "data", "morality", "en", tree)
    spec = load_spec(_spec(tmp_path, "gemma3-270m", tmp_path / "data"))
    data = prepare_data(spec, tmp_path)
    split = data.splits[("morality", "en")]
    assert len(split.train) + len(split.test) == 58 and data.dropped_empty == 2
    assert any("2 pair(s) with an empty side dropped (first: g/005)" in w for w in data.warnings)


def test_a_file_of_one_pair_repeated_is_refused_saying_why(tmp_path):
    """Once: 64 copies of one pair gave 100% recognition at layer 1 (the same pair in train and test)."""
    from mvplatform.data import load_split

    write_mvalue(tmp_path, "morality", "en", {"g": {f"{i:03d}": {"pos": "I helped.", "neg": "I hurt."} for i in range(64)}})
    with pytest.raises(DataError, match=r"1 usable pair\(s\) \(dropped: 63 repeating an earlier pair\) give 0 train"):
        load_split(str(tmp_path), "morality", "en")
