# PYTHON_ARGCOMPLETE_OK
"""The ``mvp`` command: validate, plan, submit and inspect experiment specs.

Bad input (a spec, data or model problem) prints one message naming the file, field and fix and
exits with status 2; nothing runs. Ray and MLflow are imported only by the commands that need them,
so ``mvp validate`` answers in a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mvplatform.errors import MvpError
from mvplatform.registry import ANALYSES, CONTROL_MODES, DIRECTION_METHODS, JUDGES, OPERATORS, SAMPLERS, Registry

EXAMPLES = """examples:
  mvp init my-study --concepts fairness,harmfulness --languages en,fr,sw
  mvp validate experiments/quickstart.yaml
  mvp plan experiments/quickstart.yaml
  mvp submit experiments/quickstart.yaml
  mvp report experiments/quickstart.yaml   # tables and figures of its latest run
  mvp status experiments/quickstart.yaml   # progress of its latest run (also while it runs)
  mvp compare RUN_ID_A RUN_ID_B
  mvp export RUN_ID --format gguf -o vectors/   # llama.cpp control vectors, one per cell
  mvp ui                      # MLflow UI on http://127.0.0.1:5000
  mvp list languages
  mvp similarity geographic --format csv   # the URIEL similarities Table 1 correlates with
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:  # shell completion: `eval "$(register-python-argcomplete mvp)"` (README)
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:
        pass
    args = parser.parse_args(argv)
    console = Console(stderr=False, quiet=getattr(args, "quiet", False))
    try:
        return int(args.command(args, console) or 0)
    except MvpError as exc:
        if args.debug:
            raise
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: a submission keeps its finished items in MLflow and marks its parent run KILLED")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvp", description="mvp: validate, plan, submit and inspect experiment specs "
                                     "on multilingual value concepts.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mvp {_version()}")
    _global_flags(parser, default=False)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:  # noqa: A002
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(command=fn)
        _global_flags(p, default=argparse.SUPPRESS)  # after the command too; unset here keeps the global value
        return p

    p = command("init", cmd_init, "write a new spec from flags (or answer prompts when run in a terminal)")
    p.add_argument("name", help="submission name, also the file name: experiments/NAME.yaml")
    p.add_argument("--model", default=None, help="packaged alias, local directory or hub id (default gemma3-270m)")
    p.add_argument("--concepts", default=None, help="comma-separated (default morality,toxicity)")
    p.add_argument("--languages", default=None, help="comma-separated (default en,fr,zh,sw)")
    p.add_argument("-o", "--output", type=Path, default=None, help="file to write (default experiments/NAME.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = command("validate", cmd_validate, "check a spec without running anything")
    p.add_argument("spec", type=Path, help="the experiment spec (YAML), e.g. experiments/quickstart.yaml")
    p.add_argument("--deep", action="store_true",
                   help="also check models (config only, no weights), layers against their depth, and data files")
    p = command("plan", cmd_plan, "show the work a spec expands into and the resources it asks for")
    p.add_argument("spec", type=Path, help="the experiment spec (YAML), e.g. experiments/quickstart.yaml")
    p = command("submit", cmd_submit, "run a spec on Ray and log everything to MLflow")
    p.add_argument("spec", type=Path, help="the experiment spec (YAML), e.g. experiments/quickstart.yaml")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local Ray)")
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: $MVP_CACHE_DIR or ~/.cache/mvp)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the Ray workers' own output")
    p.add_argument("--force", action="append", default=[], metavar="STEP", choices=["extract", "control", "all"],
                   help="recompute a step whatever the result store holds: extract (hidden states), control "
                        "(steering studies and evaluations) or all; repeatable. A forced submission starts a new "
                        "MLflow parent run instead of resuming an interrupted one")
    p.add_argument("--system-metrics", action="store_true",
                   help="log CPU, memory, disk, network and GPU use on the parent run while it runs (MLflow's system "
                        "metrics; the same as MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true; off by default)")
    p = command("status", cmd_status, "progress of a submission, read back from MLflow: items done, failures, "
                "time per stage")
    p.add_argument("run", nargs="?", default=None,
                   help="parent run id or a spec file (its latest submission); default: the latest submission")
    p = command("report", cmd_report, "regenerate a submission's tables and figures from MLflow (no model)")
    p.add_argument("run", help="parent run id (printed by mvp submit) or a spec file (its latest submission)")
    p.add_argument("-o", "--output", type=Path, default=Path("mvp-report"), help="folder to write (default mvp-report)")
    p.add_argument("--no-log", action="store_true", help="do not also log the files to the run's report/ folder")
    p = command("compare", cmd_compare, "key metrics of several submissions side by side")
    p.add_argument("runs", nargs="+", help="parent run ids or spec files")
    p = command("export", cmd_export, "write concept vectors for other steering tools: llama.cpp control vectors "
                "(gguf) or the layer -> vector files of the steering-vectors library (safetensors)")
    p.add_argument("run", help="parent run id (the vectors its runs logged to MLflow) or a spec file (the vectors "
                   "rebuilt from the hidden states in its result store, no model run)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                   help="gguf: for llama-cli --control-vector (mvp layer L is direction.L-1; layer 1 is left out); "
                        "safetensors: tensor N = steering-vectors layer N = mvp layer N+1, with a JSON sidecar")
    p.add_argument("-o", "--output", type=Path, default=Path("mvp-export"),
                   help="folder to write, one file per model x concept x language (default mvp-export)")
    p.add_argument("--model", action="append", default=None, help="only this model, as named in the runs; repeatable")
    p.add_argument("--concept", action="append", default=None, help="only this concept; repeatable (default: all)")
    p.add_argument("--language", action="append", default=None, help="only this language code; repeatable (default: all)")
    p.add_argument("--scale", choices=EXPORT_SCALES, default=None,
                   help="vector length at strength 1: state_norm (unit direction x the layer's mean hidden-state "
                        "norm), unit or raw; default: the spec's control.scale (state_norm without control)")
    p = command("schema", cmd_schema, "write the spec's JSON Schema (for YAML editors) or its Markdown reference")
    p.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: stdout)")
    p.add_argument("--markdown", action="store_true", help="the human reference (docs/spec.md) instead of JSON Schema")
    p = command("ui", cmd_ui, "start the MLflow UI on the local store, bound to 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=5000, help="TCP port, 1-65535 (default 5000)")
    p = command("data", cmd_data, "check a data set, or refresh the counts in the built-in data card")
    p.add_argument("action", choices=["check", "card"], help="check: run the quality checks; card: print counts")
    p.add_argument("dataset", nargs="?", default="builtin:values", help="builtin:values or an MVALUE directory")
    p.add_argument("--write", type=Path, default=None, help="card: replace the counts block in this Markdown file")
    p.add_argument("--max-length-share", type=float, default=0.60,
                   help="check: fail when the share of untied pairs whose neg side is longer lies outside "
                        "[1 - this, this] (default 0.60)")
    p.add_argument("--max-cue-accuracy", type=float, default=0.60,
                   help="check: fail when one surface feature (negation word, punctuation, first word) picks the "
                        "pos side more accurately than this on the pairs that differ in it (default 0.60)")
    p.add_argument("--min-cue-pairs", type=int, default=10,
                   help="check: judge a cue only when at least this many pairs differ in it (default 10)")
    p.add_argument("--min-pairs", type=int, default=None,
                   help="check: fewest pairs per concept and language (default: the built-in set's 128)")
    p = command("similarity", cmd_similarity, "print the language x language linguistic similarity (1 - distance) "
                "that the linguistic analysis correlates with")
    p.add_argument("feature", choices=["genetic", "geographic", "syntactic", "phonological"],
                   help="URIEL feature whose language similarity to print")
    p.add_argument("--languages", default=None, help="comma-separated codes (default: the paper's 16)")
    p.add_argument("--format", choices=["md", "csv"], default="md", help="md (default) or csv")
    p.add_argument("--source", choices=["uriel_distance", "feature_cosine"], default="uriel_distance",
                   help="uriel_distance (URIEL's own distances, as the paper; default) or feature_cosine")
    p.add_argument("--digits", type=int, default=4, help="decimals printed (default 4)")
    p = command("organism", cmd_organism, "build a model organism (a packaged model fine-tuned to show a behaviour), "
                "measure it and log the build to MLflow")
    p.add_argument("action", choices=["build"], help="build: fine-tune, save to the model cache, measure, log")
    p.add_argument("name", help="organism alias (mvp list models)")
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: $MVP_CACHE_DIR or ~/.cache/mvp)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache holds it")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: one per core); on a machine other jobs also use, 1 is far faster")
    command("doctor", cmd_doctor, "check the installation and say what to fix")
    p = command("list", cmd_list, "list the names a spec may use")
    p.add_argument("what", choices=["models", "concepts", "languages", *LISTED_CHOICES], help="which names to list")
    return parser


def _port(text: str) -> int:
    """argparse type: a TCP port, refused with exit 2 before anything starts."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; use a number from 1 to 65535")
    return int(text)


def _global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """-q and --debug, accepted before the command (``mvp --debug list``) and after it (``mvp list --debug``)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="print only errors")
    parser.add_argument("--debug", action="store_true", default=default, help="show the Python traceback of an error")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mvp-values")
    except PackageNotFoundError:
        return "unknown (not installed)"


INIT_DEFAULTS = {"model": "gemma3-270m", "concepts": "morality,toxicity", "languages": "en,fr,zh,sw"}


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    import yaml

    from mvplatform.errors import SpecError
    from mvplatform.spec import expand, parse_spec

    answers = {key: getattr(args, key) for key in INIT_DEFAULTS}
    if all(v is None for v in answers.values()) and sys.stdin.isatty():
        from rich.prompt import Prompt

        answers = {key: Prompt.ask(key, default=default, console=console) for key, default in INIT_DEFAULTS.items()}
    answers = {key: value if value is not None else INIT_DEFAULTS[key] for key, value in answers.items()}
    spec = {"name": args.name, "model": answers["model"],
            "data": {"dataset": "builtin:values",
                     "concepts": [c.strip() for c in answers["concepts"].split(",") if c.strip()],
                     "languages": [c.strip() for c in answers["languages"].split(",") if c.strip()]},
            "extract": {"method": "cluster_mean", "layers": "all"}}
    # Cross-lingual analyses compare languages: with one language only recognition applies.
    several = len(spec["data"]["languages"]) > 1
    spec["analyses"] = list(ANALYSES) if several else ["recognition"]
    text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, allow_unicode=True)
    output = args.output or Path("experiments") / f"{args.name}.yaml"
    parse_spec(text, source="mvp init's flags")  # refuse to write a spec that would not validate
    if output.exists() and not args.force:
        raise SpecError(f"{output} exists; pass --force to overwrite it or choose another name")
    schema = Path("docs/spec.schema.json")
    relative = os.path.relpath(schema.resolve(), output.resolve().parent)
    header = f"# yaml-language-server: $schema={relative}\n" if schema.is_file() else ""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(header + f"# Written by mvp init. Every field: docs/spec.md\n{text}", encoding="utf-8")
    console.print(f"wrote {output}: {len(expand(parse_spec(text)))} work items. Next: mvp plan {output}; "
                  f"mvp submit {output}", highlight=False)
    return 0


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.spec import expand, load_spec

    spec = load_spec(args.spec)
    if args.deep:
        from mvplatform.extraction import layer_numbers
        from mvplatform.inputs import prepare_data
        from mvplatform.models import check_local_weights, model_depth

        for warning in prepare_data(spec, args.spec.resolve().parent).warnings:
            console.print(f"[yellow]warning[/]: {warning}", highlight=False)
        for model in spec.models:
            check_local_weights(model)
            depth = model_depth(model)
            layer_numbers(spec.extract, depth)
            console.print(f"  {model.name}: {depth} decoder layers", highlight=False)
    console.print(f"[green]ok[/]: {args.spec} is valid{' (deep)' if args.deep else ''}: {len(expand(spec))} work items")
    return 0


def control_plan(spec) -> str:  # noqa: ANN001 - a Spec with control set
    """What the control stage will run, in generations, so its cost is visible before a submit."""
    from mvplatform.control import search_languages

    c = spec.control
    studies = search_languages(c, spec.control_languages)
    s, g = c.search, c.search.guard
    n = BUILTIN_INSTRUCTIONS
    harmful = s.instructions or round(n * c.search_fraction)
    per_trial = harmful + (g.instructions if g else 0)
    test = c.test_instructions or n - round(n * c.search_fraction)
    settings = len(c.modes) + (c.curve_points if "language_specific" in c.modes else 0)
    return (f"then control of {c.concept} on the same workers: {len(studies)} Optuna studies per model "
            f"({', '.join(studies) or 'none'}; {s.sampler}, {s.trials} trials, {s.trials_per_batch} per batched "
            f"generation, about {per_trial} responses per trial of at most {c.generation.max_new_tokens} tokens), "
            f"then {', '.join(c.modes)} on the test instructions of {len(spec.control_languages)} languages "
            f"(about {test} x {settings} responses each; built-in sets: {round(n * c.search_fraction)} search / "
            f"{n - round(n * c.search_fraction)} test per language)")


BUILTIN_INSTRUCTIONS = 150  # harmful (and as many harmless) requests per language in builtin:instructions


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.spec import expand, load_spec

    spec = load_spec(args.spec)
    items = expand(spec)
    table = Table(title=f"{spec.name}: {len(items)} extraction items (one forward pass each, unless cached)")
    for column in ("#", "model", "concept", "language", "steps"):
        table.add_column(column)
    for i, item in enumerate(items, 1):
        table.add_row(str(i), item.model.short_name, item.concept, item.language, "hidden states -> vectors -> recognition")
    console.print(table)
    cross = spec.cross_lingual
    if cross:
        console.print(f"then per model x concept ({len(spec.models) * len(spec.data.concepts)} Ray tasks, no model; "
                      "in this process when every item is cached): "
                      f"{', '.join(cross)} over {len(spec.data.languages)} languages "
                      f"(high-resource: {', '.join(spec.analysis.high_resource)})")
        for model in spec.models:
            if model.languages is not None or model.high_resource is not None:
                console.print(f"  {model.short_name}: {len(spec.languages_for(model))} languages "
                              f"({', '.join(spec.languages_for(model))}), high-resource: "
                              f"{', '.join(spec.analysis_for(model).high_resource)}", highlight=False)
    if spec.control is not None:
        console.print(control_plan(spec), highlight=False)
    r = spec.resources
    cpus = r.cpus_per_worker if r.cpus_per_worker is not None else "the machine's CPUs / workers (1 on GPU workers)"
    gpus = "1 if the Ray cluster has GPUs, else 0" if r.gpus_per_worker == "auto" else r.gpus_per_worker
    console.print(f"resources: {r.model_workers} Ray actor(s) per model, each holding one model copy; per actor: "
                  f"CPUs = {cpus}; GPUs = {gpus}; retries = {r.max_retries}. Hidden states cached in "
                  f"{spec.results.dir}/ (reuse: {spec.results.reuse})")
    return 0


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.spec import load_spec

    spec = load_spec(args.spec)
    if args.system_metrics:  # MLflow's own switch, read by tracking/system_metrics.py
        os.environ["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] = "true"
    from ray_jobs.submit import submit

    summary = submit(spec, args.spec.resolve(), address=args.address, cache_dir=args.cache_dir, console=console,
                     verbose=args.verbose, force=frozenset(args.force))
    table = Table(title=f"{spec.name}: finished in {summary.seconds:.0f} s", show_header=False)
    table.add_row("extraction items", f"{len(summary.done)} done ({len(summary.computed)} ran the model, "
                                      f"{len(summary.cached)} from the cache), {len(summary.failures)} failed")
    table.add_row("cross-lingual analyses", str(len(summary.analysed)))
    loads = "; ".join(f"{model}: {', '.join(map(str, n)) or 'none (all cached)'}"
                      for model, n in summary.model_loads.items())
    table.add_row("model loads per worker", loads or "none")
    if not summary.ray:
        table.add_row("Ray", "not started: every item was cached and nothing needed a model")
    if summary.resumed:
        table.add_row("resumed", f"the interrupted parent run (resume {summary.resumed}); no child run logged twice")
    if spec.control is not None:
        table.add_row("control", f"{spec.control.concept}: Table 2 for {len(summary.control)} model(s) below")
    table.add_row("MLflow", f"experiment {summary.experiment!r}, parent run {summary.parent_run_id}")
    table.add_row("store", summary.tracking_uri)
    table.add_row("look", "mvp ui   (or: mvp report " + str(args.spec) + ")")
    console.print(table)
    for model, markdown in summary.control.items():
        console.print(f"\nFollowing rate (%), {model} / {spec.control.concept}:\n{markdown}", highlight=False,
                      markup=False)
    for label, message in summary.failures.items():
        console.print(f"[red]failed[/] {label}: {message}", highlight=False)
    return 0 if summary.ok else 1


def _client(refs: list[str]):  # noqa: ANN202 - an MlflowClient, imported lazily
    """The store of the first spec file among ``refs`` that names one, else the default store."""
    from mvplatform.spec import load_spec
    from tracking.store import check_store, resolve_tracking_uri

    spec_uris = [load_spec(ref).tracking.uri for ref in refs if Path(ref).suffix in (".yaml", ".yml")]
    return check_store(resolve_tracking_uri(next((u for u in spec_uris if u), None)))


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from tracking.readback import find_submission, latest_submission, submission_status

    client = _client([args.run] if args.run else [])
    parent = find_submission(client, args.run) if args.run else latest_submission(client)
    s = submission_status(client, parent)
    table = Table(title=f"{s.spec}: submission {s.run_id}", show_header=False)
    table.add_row("status", s.status)
    total = "?" if s.items_total is None else str(s.items_total)
    table.add_row("extraction items", f"{s.items_done}/{total} done, {len(s.failures)} failed")
    table.add_row("cross-lingual analyses", f"{s.analyses_done} done")
    if s.stage_seconds:
        table.add_row("time per stage", ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
    table.add_row("MLflow run open", f"{s.elapsed:.1f} s" + (" so far" if s.status == "RUNNING" else ""))
    if s.resumed:
        table.add_row("resumed", f"{s.resumed} time(s)")
    if s.model_loads is not None:
        table.add_row("model loads", f"{s.model_loads:.0f}")
    table.add_row("MLflow", f"experiment {s.experiment!r} in {client.tracking_uri}")
    console.print(table)
    if s.idle is not None and s.idle > 300:
        console.print(f"[yellow]no progress for {s.idle / 60:.0f} min[/]: if its driver is gone, mvp submit the same "
                      "spec again to resume it", highlight=False)
    for label, message in s.failures.items():
        console.print(f"[red]failed[/] {label}: {message}", highlight=False)
    return STATUS_EXIT.get(s.status, 1)


# `mvp status` exit code, so scripts can wait on a submission: done or still going is 0.
STATUS_EXIT = {"FINISHED": 0, "RUNNING": 0, "SCHEDULED": 0, "FAILED": 1, "KILLED": 1}


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from tracking.rebuild import report

    files = report(_client([args.run]), args.run, args.output, log=not args.no_log)
    console.print(f"wrote {len(files)} files to {args.output}/: " + ", ".join(f.name for f in files))
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from tracking.readback import compare

    labels, rows = compare(_client(args.runs), args.runs)
    table = Table(title="mvp compare")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    for name, values in rows.items():
        table.add_row(name, *["–" if v is None else f"{v:.3f}" for v in values])
    console.print(table)
    return 0


EXPORT_FORMATS = ("gguf", "safetensors")  # = mvplatform.export.FORMATS / SCALES (a test checks), kept here so
EXPORT_SCALES = ("state_norm", "unit", "raw")  # building the parser imports no numpy


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.export import export_cells, spec_scale

    if Path(args.run).suffix in (".yaml", ".yml") or Path(args.run).is_file():
        from mvplatform.spec import load_spec
        from ray_jobs.stored import stored_vectors

        spec = load_spec(args.run)
        cells = stored_vectors(spec, Path(args.run), args.model, args.concept, args.language)
    else:
        from tracking.exports import submission_vectors

        cells, spec = submission_vectors(_client([]), args.run, args.model, args.concept, args.language)
    scale = args.scale or spec_scale(spec)
    files = export_cells(cells, args.output, args.format, scale)
    console.print(f"wrote {len(files)} files ({len(cells)} cells, {args.format}, scale {scale}) to {args.output}/: "
                  + ", ".join(f.name for f in files), highlight=False)
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.spec import json_schema
    from mvplatform.specdoc import spec_reference

    text = spec_reference().rstrip() if args.markdown else json.dumps(json_schema(), indent=2)
    if args.output:
        args.output.write_text(text + "\n")
        console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0


def cmd_ui(args: argparse.Namespace, console: Console) -> int:
    from tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    base = f"http://{args.host}:{args.port}"
    console.print(f"MLflow UI for {uri} on {base} (Ctrl-C to stop)", highlight=False)
    for experiment in _client([]).search_experiments():
        if experiment.name != "Default":
            console.print(f"  {experiment.name}: {base}/#/experiments/{experiment.experiment_id}/runs", highlight=False)
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    return run_until_signalled(command)


def run_until_signalled(command: list[str]) -> int:
    """Run a server in its own process group and stop the whole group on Ctrl-C or SIGTERM.

    MLflow's UI starts worker processes; stopping only the parent (as ``subprocess.call`` does on
    SIGTERM) would leave them serving on the port.
    """
    server = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = server.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):  # workers the server left behind
            os.killpg(server.pid, signal.SIGKILL)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def cmd_data(args: argparse.Namespace, console: Console) -> int:
    from rich import box

    from mvplatform.catalog import CONCEPTS
    from mvplatform.data import builtin_root, resolve_dataset
    from mvplatform.datacheck import (
        CUE_NAMES,
        MIN_PAIRS,
        CueLimits,
        check_concept,
        check_instructions,
        data_card_counts,
        replace_block,
        worst,
    )

    root = resolve_dataset(args.dataset)
    if args.action == "card":
        counts = data_card_counts(root)
        if args.write:
            args.write.write_text(replace_block(args.write.read_text(encoding="utf-8"), counts), encoding="utf-8")
            console.print(f"updated the counts in {args.write}")
        else:
            sys.stdout.write(counts + "\n")
        return 0
    limits = CueLimits(args.max_length_share, args.max_cue_accuracy, args.min_cue_pairs)
    table = Table(title="surface cues: worst language, value, pairs differing in the cue", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False,
                  caption="length: share of untied pairs whose neg side is longer; others: accuracy of the best "
                          "one-feature rule on the pairs that differ in it")
    for column in ("concept", "pairs", *CUE_NAMES):
        table.add_column(column, no_wrap=True)
    problems, cue_failures = [], []
    for concept in [c for c in CONCEPTS if (root / c).is_dir()]:
        reports = check_concept(root, concept, min_pairs=MIN_PAIRS if args.min_pairs is None else args.min_pairs,
                                min_cue_pairs=limits.min_cue_pairs)
        problems += [f"{r.concept}_{r.language}: {p}" for r in reports for p in r.problems]
        failed = [f"{r.concept}_{r.language}: {f}" for r in reports for f in r.cue_problems(limits)]
        cue_failures += failed
        cells = []
        for name in CUE_NAMES:
            report = worst(reports, name, limits)
            cue = report.cues[name] if report else None
            if cue is None or cue.covered < limits.min_cue_pairs:
                cells.append("–")
                continue
            value = f"{cue.share if cue.share is not None else cue.accuracy:.2f} {report.language} n{cue.covered}"
            cells.append(f"[red]{value}[/]" if limits.failure(cue) else value)
        table.add_row(concept, str(min((r.pairs for r in reports if r.pairs), default=0)), *cells)
    console.print(table)
    if args.dataset == "builtin:values":
        instructions = check_instructions(builtin_root() / "instructions")
        problems += [f"instructions/{lang}: {p}" for lang, ps in instructions.items() for p in ps]
    for problem in problems:
        console.print(f"[red]problem[/] {problem}", highlight=False, soft_wrap=True)
    for failure in cue_failures:
        console.print(f"[red]cue[/] {failure}", highlight=False, soft_wrap=True)
    console.print(f"{len(problems)} problem(s) and {len(cue_failures)} cue failure(s) in {root} (limits: length "
                  f"share {1 - limits.max_length_share:.2f}-{limits.max_length_share:.2f}, other cues <= "
                  f"{limits.max_cue_accuracy:.2f}, judged from {limits.min_cue_pairs} differing pairs)",
                  highlight=False, soft_wrap=True)
    return 1 if problems or cue_failures else 0


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from rich.markup import escape

    from mvplatform.cli_doctor import run_checks

    checks = run_checks()
    table = Table(title="mvp doctor")
    for column in ("", "check", "found", "fix"):
        table.add_column(column)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.required else "[yellow]optional[/]")
        table.add_row(mark, escape(c.name), escape(c.found), "" if c.ok else escape(c.fix))
    console.print(table)
    failed = [c.name for c in checks if c.required and not c.ok]
    console.print(f"[red]{len(failed)} problem(s): {', '.join(failed)}[/]" if failed else "[green]ready[/]")
    return 1 if failed else 0


LISTED_CHOICES: dict[str, Registry] = {  # `mvp list WHAT`: names and help straight from the registries
    "methods": DIRECTION_METHODS, "operators": OPERATORS, "judges": JUDGES, "samplers": SAMPLERS,
    "modes": CONTROL_MODES, "analyses": ANALYSES,
}


def cmd_similarity(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.catalog import LANGUAGES
    from mvplatform.errors import SpecError
    from mvplatform.linguistics import format_matrix, similarity_matrix

    languages = list(LANGUAGES) if args.languages is None else [c.strip() for c in args.languages.split(",") if c.strip()]
    unknown = [code for code in languages if code not in LANGUAGES]
    if unknown or not languages:
        raise SpecError(f"--languages: unknown code(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(LANGUAGES)} (mvp list languages)")
    matrix = similarity_matrix(languages, args.feature, args.source)
    sys.stdout.write(format_matrix(matrix, languages, args.format, max(3, args.digits)))
    return 0


def cmd_organism(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.errors import SpecError
    from mvplatform.models import default_cache_dir
    from mvplatform.organism import ORGANISMS, is_built, organism_dir
    from tracking.organism_runs import build_and_log
    from tracking.store import resolve_tracking_uri

    if args.name not in ORGANISMS:
        raise SpecError(f"unknown organism {args.name!r}; organisms: {', '.join(ORGANISMS)}")
    cache_dir = args.cache_dir or default_cache_dir()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if is_built(args.name, cache_dir) and not args.force:
        console.print(f"{args.name} is built: {organism_dir(args.name, cache_dir)} (--force rebuilds it)")
        return 0
    build_and_log(args.name, cache_dir, resolve_tracking_uri(), console)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from mvplatform.catalog import CONCEPTS, LANGUAGES

    table = Table(title=args.what)
    if args.what == "models":
        from mvplatform.models import PACKAGED  # torch: only for the model list
        from mvplatform.organism import ORGANISMS

        table.add_column("alias"), table.add_column("model"), table.add_column("install")
        for m in PACKAGED.values():
            table.add_row(m.alias, m.description, m.pip_install)
        for r in ORGANISMS.values():
            table.add_row(r.name, r.description, f"mvp organism build {r.name} (or on first use; base: {r.base})")
    elif args.what == "languages":
        table.add_column("code"), table.add_column("language"), table.add_column("script")
        for lang in LANGUAGES.values():
            table.add_row(lang.code, lang.name, lang.script)
    elif args.what in LISTED_CHOICES:
        table.add_column("name"), table.add_column("meaning")
        for name, meaning in LISTED_CHOICES[args.what].choices().items():
            table.add_row(name, meaning)
    else:
        table.add_column("name")
        for name in CONCEPTS:
            table.add_row(name)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
