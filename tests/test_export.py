"""``mvp export``: concept vectors as llama.cpp control vectors (gguf) and steering-vectors files (safetensors).

Files are read back with the readers other tools use (``gguf.GGUFReader``, ``safetensors``) and compared
with hand-computed vectors; the CLI round-trips a real tiny submission, from MLflow and from the result store.
"""

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from safetensors import safe_open
from safetensors.numpy import load_file

from mvplatform import __version__
from mvplatform.cli import EXPORT_FORMATS, EXPORT_SCALES, main
from mvplatform.concepts import ConceptVectors
from mvplatform.control import steering_vectors
from mvplatform.errors import SpecError
from mvplatform.export import FORMATS, SCALES, CellVectors, export_cells, steered, write_gguf, write_safetensors
from mvplatform.spec import load_spec
from ray_jobs.submit import submit

# mvp layers 1, 3, 4 of a hidden size 2 model; norms are the layers' mean hidden-state norms
VECTORS = ConceptVectors([1, 3, 4], np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]), "cluster_mean",
                         norms=np.array([10.0, 5.0, 2.0]))
CELL = CellVectors("org/Model 7B", "morality", "fr", VECTORS, "test")
# state_norm: unit direction x norm -> [6, 8], [0, 5], [2, 0]; unit: [0.6, 0.8], [0, 1], [1, 0]
STATE_NORM = {1: [6.0, 8.0], 3: [0.0, 5.0], 4: [2.0, 0.0]}


def gguf_fields(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    return fields, {t.name: np.array(t.data) for t in reader.tensors}


def test_gguf_is_a_llama_cpp_control_vector_with_layers_shifted_to_block_indices(tmp_path):
    path = write_gguf(CELL, tmp_path, "state_norm")
    assert path.name == "org-Model-7B_morality_fr.gguf"
    fields, tensors = gguf_fields(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "org/Model 7B"
    assert fields["controlvector.layer_count"] == 2
    # mvp layer 3 -> direction.2, layer 4 -> direction.3; layer 1 would be direction.0, which llama.cpp refuses
    assert sorted(tensors) == ["direction.2", "direction.3"]
    assert tensors["direction.2"].tolist() == STATE_NORM[3] and tensors["direction.3"].tolist() == STATE_NORM[4]
    assert all(t.dtype == np.float32 and t.ndim == 1 for t in tensors.values())
    assert json.loads(fields["mvp.skipped_layers"]) == [1] and json.loads(fields["mvp.layers"]) == [3, 4]
    assert (fields["mvp.scale"], fields["mvp.method"], fields["mvp.concept"], fields["mvp.language"]) == (
        "state_norm", "cluster_mean", "morality", "fr")
    assert fields["mvp.mvp_version"] == __version__


def test_gguf_of_layer_1_alone_is_refused(tmp_path):
    only_first = CellVectors("m", "morality", "en", ConceptVectors([1], np.array([[1.0, 0.0]]), "cluster_mean"))
    with pytest.raises(SpecError, match="layer 1"):
        write_gguf(only_first, tmp_path, "unit")


def test_safetensors_holds_steering_vectors_keys_and_metadata(tmp_path):
    path, sidecar = write_safetensors(CELL, tmp_path, "unit")
    tensors = load_file(path)
    assert sorted(tensors) == ["0", "2", "3"]  # steering-vectors' 0-based block index = mvp layer - 1
    np.testing.assert_allclose(tensors["0"], [0.6, 0.8], rtol=1e-6)
    assert tensors["2"].tolist() == [0.0, 1.0] and tensors["3"].tolist() == [1.0, 0.0]
    meta = json.loads(sidecar.read_text())
    assert meta["layers"] == [1, 3, 4] and meta["scale"] == "unit" and meta["model"] == "org/Model 7B"
    assert (meta["method"], meta["concept"], meta["language"], meta["mvp_version"], meta["hidden_size"]) == (
        "cluster_mean", "morality", "fr", __version__, 2)
    with safe_open(str(path), framework="numpy") as handle:  # the same metadata in the file's own header
        header = handle.metadata()
    assert json.loads(header["layers"]) == [1, 3, 4] and header["scale"] == "unit"


def test_raw_scale_keeps_the_extracted_difference_and_state_norm_needs_norms(tmp_path):
    path, _ = write_safetensors(CELL, tmp_path, "raw")
    assert load_file(path)["0"].tolist() == [3.0, 4.0]
    no_norms = CellVectors("m", "morality", "en", ConceptVectors([2], np.array([[1.0, 0.0]]), "pca"))
    with pytest.raises(SpecError, match="--scale unit or raw"):
        write_safetensors(no_norms, tmp_path, "state_norm")


def test_export_cells_refuses_bad_format_and_clashing_names(tmp_path):
    with pytest.raises(SpecError, match="format 'onnx'"):
        export_cells([CELL], tmp_path, "onnx", "unit")
    twin = CellVectors("org-Model 7B", "morality", "fr", VECTORS)  # a different model, the same file name
    with pytest.raises(SpecError, match="same file"):
        export_cells([CELL, twin], tmp_path, "gguf", "unit")


def test_cli_choices_match_the_export_module():
    assert EXPORT_FORMATS == FORMATS and EXPORT_SCALES == SCALES


SPEC = """
name: export-e2e
model: {{name: "{model}", device: cpu}}
data: {{dataset: "{data}", concepts: [morality], languages: [en, fr]}}
extract: {{batch_size: 4}}
analyses: [recognition]
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""


@pytest.fixture(scope="module")
def submission(tiny_model_dir, mvalue_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(model=tiny_model_dir("llama"), data=mvalue_dir, uri=uri, results=folder / "results"))
    summary = submit(load_spec(path), path)
    assert summary.ok, summary.failures
    return summary, MlflowClient(tracking_uri=uri), path


def logged_vectors(client: MlflowClient, parent_id: str, tmp_path: Path) -> dict[str, ConceptVectors]:
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.step = 'extract'")
    out = {}
    for run in runs:
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        path = client.download_artifacts(run.info.run_id, "vectors.safetensors", str(folder))
        out[run.data.tags["language"]] = ConceptVectors.load(path)
    return out


def test_cli_exports_a_submission_as_gguf_from_mlflow(submission, tmp_path, monkeypatch, capsys):
    summary, client, _ = submission
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    out = tmp_path / "out"
    assert main(["export", summary.parent_run_id, "--format", "gguf", "-o", str(out), "--language", "fr"]) == 0
    [path] = sorted(out.iterdir())
    assert path.name.endswith("_morality_fr.gguf")
    expected = steering_vectors(logged_vectors(client, summary.parent_run_id, tmp_path)["fr"], "state_norm")
    fields, tensors = gguf_fields(path)
    assert sorted(tensors) == ["direction.1", "direction.2"]  # the tiny model's layers 2 and 3
    for layer in (2, 3):
        assert np.array_equal(tensors[f"direction.{layer - 1}"], expected[layer])
    assert fields["mvp.source"].startswith("mlflow run ") and fields["mvp.parent_run"] == summary.parent_run_id
    assert fields["mvp.read"] == "hidden_states" and fields["mvp.scale"] == "state_norm"  # the spec has no control


def test_cli_exports_from_the_result_store_the_vectors_the_runs_logged(submission, tmp_path, capsys):
    summary, client, spec_path = submission
    out = tmp_path / "out"
    assert main(["export", str(spec_path), "--format", "safetensors", "-o", str(out), "--scale", "raw"]) == 0
    logged = logged_vectors(client, summary.parent_run_id, tmp_path)
    for language in ("en", "fr"):
        [path] = out.glob(f"*_morality_{language}.safetensors")
        tensors = load_file(path)
        assert sorted(tensors) == ["0", "1", "2"]
        for layer in (1, 2, 3):
            assert np.array_equal(tensors[str(layer - 1)], logged[language].directions[layer - 1].astype(np.float32))
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["source"].startswith("result store") and meta["scale"] == "raw" and meta["layers"] == [1, 2, 3]
        assert meta["read"] == "hidden_states" and meta["states"] == "cpu"


def test_cli_export_bad_input_exits_2(submission, tmp_path, monkeypatch, capsys):
    summary, client, _ = submission
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    assert main(["export", summary.parent_run_id, "--format", "gguf", "-o", str(tmp_path), "--concept", "fairness"]) == 2
    assert "no finished extraction run for concept fairness" in capsys.readouterr().err
    assert main(["export", "0123456789abcdef", "--format", "gguf"]) == 2
    assert main(["export", str(tmp_path / "missing.yaml"), "--format", "gguf"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["export", summary.parent_run_id, "--format", "onnx"])
    assert exc.value.code == 2


def test_steering_vectors_library_steers_the_exported_file_as_mvp_does(tiny_model_dir, tmp_path):
    """The safetensors file in steering-vectors' own ``SteeringVector``: same logits as mvp's steering at 0.5."""
    steering_vectors_lib = pytest.importorskip("steering_vectors")  # not an mvp dependency: only where installed
    import torch
    from safetensors.torch import load_file as load_torch

    from mvplatform.models import load_model
    from mvplatform.spec import ModelSpec
    from mvplatform.steering import Steering, steer

    loaded = load_model(ModelSpec(name=str(tiny_model_dir("llama")), device="cpu", prompt="plain"))
    rng = np.random.default_rng(0)
    cell = CellVectors("tiny", "morality", "en", ConceptVectors([2, 3], rng.normal(size=(2, 32)), "cluster_mean",
                                                                norms=np.array([4.0, 9.0])))
    path, _ = write_safetensors(cell, tmp_path, "state_norm")
    vector = steering_vectors_lib.SteeringVector({int(k): v for k, v in load_torch(path).items()}, "decoder_block")
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        plain = loaded.model(ids).logits
        with vector.apply(loaded.model, multiplier=0.5):
            theirs = loaded.model(ids).logits
        with steer(loaded, Steering(steered(cell, "state_norm")), np.full((1, 2), 0.5)):
            ours = loaded.model(ids).logits
    assert not torch.allclose(theirs, plain)  # the vectors do something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)



# -- the vectors as MLflow logged models, and the parent run's summary metrics ----------------------------------


def extraction_runs(client: MlflowClient, parent_id: str) -> dict[str, object]:
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.step = 'extract'")
    return {run.data.tags["language"]: run for run in runs}


def test_each_cell_is_a_logged_model_with_its_metrics_that_projects_states(submission, tmp_path, monkeypatch):
    import mlflow
    import mlflow.pyfunc

    summary, client, _ = submission
    runs = extraction_runs(client, summary.parent_run_id)
    experiment = client.get_run(summary.parent_run_id).info.experiment_id
    models = {m.tags["language"]: m for m in client.search_logged_models([experiment])}
    assert sorted(models) == ["en", "fr"]
    vectors = logged_vectors(client, summary.parent_run_id, tmp_path)
    for language, model in models.items():
        run = runs[language]
        assert model.status == LoggedModelStatus.READY and model.model_type == "mvp-concept-vectors"
        assert model.source_run_id == run.info.run_id and model.name.endswith(f"-morality-{language}")
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        linked = {m.key: m.value for m in model.metrics}  # the Models tab's metric columns
        assert linked["selected_accuracy"] == run.data.metrics["selected_accuracy"]
        assert linked["best_accuracy"] == run.data.metrics["best_accuracy"] and "recognition_accuracy" not in linked
        layer = int(run.data.metrics["selected_layer"])
        assert model.params["default_layer"] == str(layer)
        pyfunc = mlflow.pyfunc.load_model(model.artifact_location)
        states = np.random.default_rng(1).normal(size=(3, 32)).astype(np.float32)
        direction = vectors[language].directions.astype(np.float64)
        np.testing.assert_allclose(pyfunc.predict(states), states @ direction[layer - 1], rtol=1e-6)
        np.testing.assert_allclose(pyfunc.predict(states, params={"layer": 1}), states @ direction[0], rtol=1e-6)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)  # registrable, as from the Models tab
    version = mlflow.register_model(f"models:/{models['fr'].model_id}", "morality-fr")
    assert int(version.version) == 1 and client.get_model_version("morality-fr", "1").source == (
        f"models:/{models['fr'].model_id}")


def test_parent_run_summarises_selected_accuracy_and_chance_for_the_compare_view(submission):
    summary, client, _ = submission
    runs = extraction_runs(client, summary.parent_run_id)
    metrics = client.get_run(summary.parent_run_id).data.metrics
    model = runs["en"].data.tags["model"]
    selected = [run.data.metrics["selected_accuracy"] for run in runs.values()]
    above = [run.data.metrics["selected_above_chance"] for run in runs.values()]
    assert metrics[f"mean_selected_accuracy/{model}/morality"] == pytest.approx(np.mean(selected))
    assert metrics[f"mean_selected_accuracy/{model}"] == metrics["mean_selected_accuracy"] == pytest.approx(
        np.mean(selected))
    assert metrics[f"share_above_chance/{model}"] == metrics["share_above_chance"] == pytest.approx(np.mean(above))
