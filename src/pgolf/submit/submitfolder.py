"""`pgolf submit`: finished runs -> a complete records folder in the challenge's layout.

    records/<track dir>/<date>_<name>/
        README.md          what the run is, config, per-seed table, sizes, significance, reproduce
        submission.json    the official fields (author, github_id, name, blurb, date, val_loss,
                           val_bpb, bytes_total, bytes_code) + track, seeds, seed_results
        train_gpt.py       the compact export of the recipe (what the code bytes count)
        train_gpt_readable.py  the same program as plain source, comments kept (not counted;
                           what a reviewer reads)
        train_seed<S>.log  every seed's train log, verbatim
        requirements.txt   every third-party import of train_gpt.py, as PyPI names
        train_loss.png, val_bpb.png, size.png   curves (pgolf.submit.plots) and where the bytes go

Track folders as in openai/parameter-golf: track_10min_16mb (records), track_non_record_16mb
(everything else; the official repo files unlimited-compute runs there too, noting it in the
README, e.g. its 4-hour baseline; there is no separate unlimited folder).

It refuses (SubmissionError, one line) rather than assemble a folder a reviewer would reject: a
total over the cap, a missing or truncated log (no final `final_*_roundtrip_exact` line), a log whose
byte counts or scores disagree with summary.json or the files, seeds of different recipes, a package
that no longer exports the code a seed counted, the same seed twice, a 10-minute-track claim for a
run without the official cap.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.config import RunConfig, apply_mapping, config_to_dict, model_config_from_dict
from pgolf.core.constants import SIZE_CAP_BYTES, pip_name
from pgolf.core.errors import ConfigError, PgolfError, UsageError
from pgolf.core.presets import get_preset, naive_baseline
from pgolf.submit.bundle import third_party_modules
from pgolf.submit.compare import Comparison, Sample, compare_samples, format_comparison, load_side, split_specs
from pgolf.submit.export import (
    READABLE_NAME,
    SCRIPT_NAME,
    bundle_sources,
    export_script,
    exported_code_bytes,
    readable_bundle,
    submission_config,
)
from pgolf.submit.plots import log_for_spec, plot_runs
from pgolf.submit.runlogs import RunResult, TrainLog, find_run_log, load_run, parse_train_log
from pgolf.submit.seeds import flatten_config, recipe_differences, recipe_of

TRACK_DIRS = {
    "10min_16mb": "track_10min_16mb",
    "non_record": "track_non_record_16mb",
    "unlimited": "track_non_record_16mb",
}
TRACK_TITLES = {
    "10min_16mb": "10-minute 8xH100 / 16 MB record track",
    "non_record": "non-record submission (16 MB)",
    "unlimited": "non-record submission, unlimited compute track (16 MB)",
}
RECORD_WALLCLOCK_S = 600.0
_SCORE_TOL = 5e-8  # logs print scores with 8 decimals


class SubmissionError(PgolfError, ValueError):
    """The runs cannot make a valid record folder; the message says which run and why."""


@dataclass
class SeedEvidence:
    """One seed: its summary, its log (parsed) and where the log is."""

    run: RunResult
    log: TrainLog

    @property
    def seed(self) -> int:
        return self.run.seed


@dataclass
class SubmitOptions:
    name: str
    author: str = "unknown"
    github_id: str = "unknown"
    track: str = "non_record"
    out_root: Path = Path("records")
    baseline: list[str] = field(default_factory=lambda: ["leaderboard:top"])  # compare specs; [] = none
    logs_dir: Path | None = None
    blurb: str = ""
    date: str = ""  # YYYY-MM-DD; "" = today
    force: bool = False  # replace an existing folder of the same name
    plots: bool = True


# ---------------------------------------------------------------- gathering and checks


def gather(specs: list[str], logs_dir: str | Path | None = None) -> list[SeedEvidence]:
    """Load each run and its log; refuses missing and truncated logs."""
    out = []
    for spec in specs:
        run = load_run(spec)
        path = find_run_log(run, logs_dir)
        if path is None:
            raise SubmissionError(f"{spec}: train log logs/{run.run_id}.txt not found (pass --logs DIR)")
        log = parse_train_log(path)
        if not log.finished:
            raise SubmissionError(
                f"{path}: truncated train log (no final_*_roundtrip_exact line): the run did not finish"
            )
        out.append(SeedEvidence(run, log))
    if not out:
        raise UsageError("pgolf submit: no runs given")
    return out


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) <= _SCORE_TOL


def check_log_matches_summary(ev: SeedEvidence) -> None:
    """The shipped log must say what summary.json says: code, artifact and total bytes, scores."""
    s, log, where = ev.run.summary, ev.log, ev.log.path
    for what, logged, counted in (
        ("Code size", log.code_bytes, s.get("code_bytes")),
        ("Serialized model", log.serialized_bytes, s.get("artifact_bytes")),
        ("Total submission size", log.total_bytes, s.get("total_bytes")),
    ):
        if logged is None:
            raise SubmissionError(f"{where}: no `{what}` line")
        if logged != counted:
            raise SubmissionError(f"{where}: `{what}: {logged} bytes` disagrees with summary.json ({counted} bytes)")
    rt = s.get("roundtrip") or {}
    if not (_close(log.roundtrip[0], rt.get("val_loss")) and _close(log.roundtrip[1], rt.get("val_bpb"))):
        raise SubmissionError(
            f"{where}: roundtrip score {log.roundtrip} disagrees with summary.json "
            f"({rt.get('val_loss')}, {rt.get('val_bpb')})"
        )
    artifact = ev.run.run_dir / Path(str(s.get("artifact_path", ""))).name
    if artifact.is_file() and artifact.stat().st_size != s.get("artifact_bytes"):
        raise SubmissionError(
            f"{artifact}: {artifact.stat().st_size} bytes on disk, but the run counted "
            f"{s.get('artifact_bytes')} (the file changed after the run)"
        )


def counted_bytes(run: RunResult, code_bytes: int) -> int:
    """Bytes held against the cap: model + code (CPU proxies count the model only, see
    pgolf.core.presets.PROXY_SIZE_CAP)."""
    counts_code = (run.config.get("quant") or {}).get("count_code_bytes", True)
    return int(run.summary.get("artifact_bytes", 0)) + (code_bytes if counts_code else 0)


def check_cap(ev: SeedEvidence, code_bytes: int) -> None:
    cap = int(ev.run.summary.get("size_cap_bytes") or SIZE_CAP_BYTES)
    total = counted_bytes(ev.run, code_bytes)
    if total > cap:
        raise SubmissionError(
            f"seed {ev.seed} ({ev.run.run_id}): {total:,} bytes counted against the "
            f"{cap:,}-byte cap, over by {total - cap:,}"
        )


def run_config(run: RunResult) -> RunConfig:
    cfg = RunConfig()
    apply_mapping(cfg, run.config, f"{run.run_dir}/summary.json config")
    return cfg


def check_same_recipe(evidence: list[SeedEvidence]) -> None:
    """Seeds of one submission: one recipe (configs equal but for seed and paths), distinct seeds."""
    seeds = [ev.seed for ev in evidence]
    if len(set(seeds)) != len(seeds):
        raise SubmissionError(f"the same seed appears twice: {sorted(seeds)}")
    first = evidence[0]
    for ev in evidence[1:]:
        diffs = recipe_differences(ev.run.config, first.run.config)
        if diffs:
            raise SubmissionError(
                f"seed {ev.seed} ({ev.run.run_id}) is another recipe than seed {first.seed}: " + "; ".join(diffs[:4])
            )


def check_exported_code(evidence: list[SeedEvidence]) -> None:
    """Each seed's counted code bytes must be what the package exports for its config now; a
    mismatch means the code changed since that seed ran, and the shipped script would not be it."""
    for ev in evidence:
        now = exported_code_bytes(run_config(ev.run))
        if now != ev.run.summary.get("code_bytes"):
            raise SubmissionError(
                f"seed {ev.seed} ({ev.run.run_id}) counted {ev.run.summary.get('code_bytes')} code "
                f"bytes but the package now exports {now}: the code changed since it ran"
            )


def check_track(evidence: list[SeedEvidence], track: str) -> None:
    if track not in TRACK_DIRS:
        raise UsageError(f"--track {track!r}: expected one of {', '.join(TRACK_DIRS)}")
    if track != "10min_16mb":
        return
    for ev in evidence:
        t, q = ev.run.config.get("train") or {}, ev.run.config.get("quant") or {}
        wall = float(t.get("max_wallclock_seconds", 0.0))
        if not 0 < wall <= RECORD_WALLCLOCK_S:
            raise SubmissionError(
                f"seed {ev.seed} trained with train.max_wallclock_seconds={wall:g}: the 10-minute "
                "track needs a cap of at most 600 s; use --track non_record or unlimited"
            )
        if int(q.get("size_cap_bytes", SIZE_CAP_BYTES)) != SIZE_CAP_BYTES or not q.get("count_code_bytes", True):
            raise SubmissionError(
                f"seed {ev.seed} was held to a scaled cap ({int(q.get('size_cap_bytes', 0)):,} model "
                "bytes, a CPU proxy): the 10-minute track counts code + model against 16,000,000; "
                "use --track non_record"
            )


def infer_track(cfg: RunConfig) -> str:
    """The track a single run belongs to: the record track only with the official cap and a wall-clock
    limit of at most 10 minutes; uncapped training is the unlimited-compute (non-record) track."""
    wall = cfg.train.max_wallclock_seconds
    if wall <= 0:
        return "unlimited"
    official = cfg.quant.size_cap_bytes == SIZE_CAP_BYTES and cfg.quant.count_code_bytes
    return "10min_16mb" if official and wall <= RECORD_WALLCLOCK_S else "non_record"


# ---------------------------------------------------------------- the files


def requirements_text(cfg: RunConfig) -> str:
    """requirements.txt for the exported script: one PyPI name per third-party import, with the
    version this machine ran as a comment (torch's build differs between CPU and CUDA machines)."""
    from importlib import metadata

    lines = ["# Third-party imports of train_gpt.py (parsed from its bundle); versions this run used in comments."]
    for name in third_party_modules(bundle_sources(submission_config(cfg))[0]):  # what ships
        dist = pip_name(name)
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed here"
        lines.append(f"{dist:<20}# {version}")
    return "\n".join(lines) + "\n"


def safe_name(name: str) -> str:
    """A folder-safe run name: letters, digits, '.', '-', '_' (others become '_')."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("_.")
    if not out:
        raise UsageError(f"--name {name!r}: needs at least one letter or digit")
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def seed_results(evidence: list[SeedEvidence], code_bytes: int) -> dict:
    out = {}
    for ev in evidence:
        s, final = ev.run.summary, ev.run.final()
        out[str(ev.seed)] = {
            "val_loss": final.get("val_loss"),
            "val_bpb": final.get("val_bpb"),
            "pre_quant_val_bpb": (s.get("pre_quant") or {}).get("val_bpb"),
            "roundtrip_val_bpb": (s.get("roundtrip") or {}).get("val_bpb"),
            "steps": s.get("steps"),
            "train_time_ms": s.get("train_time_ms"),
            "eval_time_s": round(ev.run.eval_seconds(), 3),
            "artifact_bytes": s.get("artifact_bytes"),
            "bytes_total": int(s.get("artifact_bytes", 0)) + code_bytes,
        }
    return out


def submission_json(
    evidence: list[SeedEvidence], opts: SubmitOptions, name: str, date: str, code_bytes: int, blurb: str
) -> dict:
    finals = [ev.run.final() for ev in evidence]
    loss, loss_std = _mean_std([f["val_loss"] for f in finals])
    bpb, bpb_std = _mean_std([f["val_bpb"] for f in finals])
    artifact_max = max(int(ev.run.summary.get("artifact_bytes", 0)) for ev in evidence)
    return {
        "author": opts.author,
        "github_id": opts.github_id,
        "name": name,
        "blurb": blurb,
        "date": date,
        "val_loss": loss,
        "val_bpb": bpb,
        "bytes_total": artifact_max + code_bytes,
        "bytes_code": code_bytes,
        "track": opts.track,
        "val_loss_std": None if math.isnan(loss_std) else loss_std,
        "val_bpb_std": None if math.isnan(bpb_std) else bpb_std,
        "seeds": [ev.seed for ev in evidence],
        "seed_results": seed_results(evidence, code_bytes),
    }


def default_blurb(cfg: RunConfig, ev: SeedEvidence) -> str:
    s, m = ev.run.summary, cfg.model
    return (
        f"pgolf preset {cfg.preset}: {m.num_layers}x{m.model_dim} GPT ({s.get('params', 0):,} params, vocab "
        f"{m.vocab_size}), {s.get('scheme')}+{s.get('codec')} artifact, "
        f"{'sliding-window' if ev.run.summary.get('sliding') else 'non-overlapping'} evaluation."
    )


# ---------------------------------------------------------------- README


def _table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _f(x, fmt: str = ".5f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def seeds_markdown(evidence: list[SeedEvidence], code_bytes: int) -> str:
    head = [
        "seed",
        "steps",
        "pre-quant val_bpb",
        "roundtrip val_bpb",
        "final val_loss",
        "final val_bpb",
        "artifact bytes",
        "total bytes",
        "train s",
        "eval s",
    ]
    rows, cols = [], []
    for ev in evidence:
        s, final = ev.run.summary, ev.run.final()
        vals = [
            float(s.get("steps", 0)),
            (s.get("pre_quant") or {}).get("val_bpb"),
            (s.get("roundtrip") or {}).get("val_bpb"),
            final.get("val_loss"),
            final.get("val_bpb"),
            float(s.get("artifact_bytes", 0)),
            float(s.get("artifact_bytes", 0) + code_bytes),
            float(s.get("train_time_ms", 0)) / 1000,
            ev.run.eval_seconds(),
        ]
        cols.append([float("nan") if v is None else float(v) for v in vals])
        rows.append([str(ev.seed)] + [_cell(v, i) for i, v in enumerate(cols[-1])])
    arr = np.array(cols)
    rows.append(["**mean**"] + [_cell(v, i, mean=True) for i, v in enumerate(arr.mean(axis=0))])
    if len(evidence) > 1:
        rows.append(["std"] + [_cell(v, i, mean=True) for i, v in enumerate(arr.std(axis=0, ddof=1))])
    return _table(rows, head)


def _cell(v: float, col: int, mean: bool = False) -> str:
    if col in (0, 5, 6):
        return _f(v, ",.1f" if mean else ",.0f")
    if col in (7, 8):
        return _f(v, ".1f")
    return _f(v, ".8f" if col in (3, 4) else ".5f")


def config_markdown(cfg: RunConfig) -> str:
    """The run's options that differ from the naive baseline (the official script)."""
    mine, base = (
        flatten_config(recipe_of(config_to_dict(cfg))),
        flatten_config(recipe_of(config_to_dict(naive_baseline()))),
    )
    rows = [[f"`{k}`", f"`{mine[k]!r}`", f"`{base.get(k)!r}`"] for k in sorted(mine) if mine[k] != base.get(k)]
    return _table(rows, ["option", "this run", "naive baseline"]) if rows else "(identical to the naive baseline)"


def reproduce_markdown(cfg: RunConfig, evidence: list[SeedEvidence]) -> str:
    """The commands that rerun the embedded config: plain python on a CPU or one GPU, torchrun with
    the run's own process count otherwise."""
    log = evidence[0].log
    world, device = log.world_size or 1, log.device or ("cpu" if cfg.device == "cpu" else "cuda")
    launcher = f"torchrun --standalone --nproc_per_node={world} {SCRIPT_NAME}" if world > 1 else f"python {SCRIPT_NAME}"
    data = cfg.data.data_path
    lines = [
        f"The seeds ran on {world} {'CPU process' if device == 'cpu' else 'GPU'}{'es' if world > 1 and device == 'cpu' else ('s' if world > 1 else '')}"
        f" (`device:{device}` in the logs). `{SCRIPT_NAME}` embeds the whole config; the official env vars",
        "override it (SEED, RUN_ID, DATA_PATH, TOKENIZER_PATH, ...). From this folder, per seed:",
        "",
        "```bash",
    ]
    for ev in evidence:
        lines.append(
            f"SEED={ev.seed} RUN_ID=seed{ev.seed} DATA_PATH={data} \\\n"
            f"  TOKENIZER_PATH={cfg.data.tokenizer_path or '<next to the data>'} {launcher}"
        )
    lines += [
        "```",
        "",
        f"(DATA_PATH/TOKENIZER_PATH are the folders this run read; point them at your copy of the "
        f"sp{cfg.model.vocab_size} shards and tokenizer.) With the pgolf package instead of the exported script:",
        "",
        "```bash",
        pgolf_seeds_command(cfg, [ev.seed for ev in evidence]),
        "```",
    ]
    return "\n".join(lines)


def preset_overrides(cfg: RunConfig) -> list[str]:
    """`--set key=value` for every recipe option where the run differs from its preset."""
    try:
        base = get_preset(cfg.preset)
    except ConfigError:
        base = RunConfig()
    mine, ref = flatten_config(recipe_of(config_to_dict(cfg))), flatten_config(recipe_of(config_to_dict(base)))
    return [f"--set {shlex.quote(f'{k}={_option_text(mine[k])}')}" for k in sorted(mine) if mine[k] != ref.get(k)]


def _option_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def pgolf_seeds_command(cfg: RunConfig, seeds: list[int]) -> str:
    """The `pgolf seeds` command that trains this recipe again (same preset, same overrides)."""
    parts = [
        f"pgolf seeds --preset {cfg.preset} --seeds {','.join(map(str, seeds))}",
        f"--data {shlex.quote(cfg.data.data_path)}",
    ]
    if cfg.data.tokenizer_path:
        parts.append(f"--tokenizer {shlex.quote(cfg.data.tokenizer_path)}")
    return " \\\n    ".join(parts + preset_overrides(cfg))


def sizes_markdown(cfg: RunConfig, evidence: list[SeedEvidence], code_bytes: int) -> str:
    cap = int(evidence[0].run.summary.get("size_cap_bytes") or SIZE_CAP_BYTES)
    artifact_max = max(int(ev.run.summary.get("artifact_bytes", 0)) for ev in evidence)
    counted = max(counted_bytes(ev.run, code_bytes) for ev in evidence)
    text = (
        f"- model artifact (largest seed): {artifact_max:,} bytes ({evidence[0].run.summary.get('scheme')}+"
        f"{evidence[0].run.summary.get('codec')})\n- code: {code_bytes:,} bytes (the literal `{SCRIPT_NAME}` here)\n"
        f"- counted against the cap: {counted:,} of {cap:,} bytes (headroom {cap - counted:,})\n"
    )
    if not cfg.quant.count_code_bytes or cap != SIZE_CAP_BYTES:
        text += (
            f"- scaled cap (CPU proxy): {cap:,} model bytes. It is the naive proxy's int8+zlib model bytes after "
            "600 s x 16,000,000 / 15,815,847 (the official baseline's model bytes against the real cap), so the "
            "naive proxy just fits as the official baseline does; the code is not counted at proxy scale because "
            "it does not shrink with the model (pgolf/core/presets.py, PROXY_SIZE_CAP; BENCHMARKS.md).\n"
        )
    return text


def significance_markdown(comparisons: list[tuple[str, Comparison]]) -> str:
    if not comparisons:
        return (
            "No baseline comparison here (one `pgolf run`, or `--baseline none`): run several seeds "
            "(`pgolf seeds`) and `pgolf submit --baseline leaderboard:top` (or the runs to beat) to test it."
        )
    parts = [
        "One-sided Welch t-test (a one-sample test when a side has one value), H1: this run is lower. "
        "README rule: improvement >= 0.005 nats at p < 0.01 (the improvement itself tested); "
        "maintainers' chronological rule: p < 0.25 against the previous row (val_bpb)."
    ]
    for spec, c in comparisons:
        parts += ["", f"Against `{spec}`:", "", "```", format_comparison(c), "```"]
    return "\n".join(parts)


def readme_text(
    cfg: RunConfig,
    evidence: list[SeedEvidence],
    sub: dict,
    opts: SubmitOptions,
    comparisons: list[tuple[str, Comparison]],
    pictures: list[str],
) -> str:
    hours = sum(float(ev.run.summary.get("train_time_ms", 0)) for ev in evidence) / 3.6e6
    wall = cfg.train.max_wallclock_seconds
    sections = [
        f"# {sub['name']}",
        "",
        f"**{TRACK_TITLES[opts.track]}** | val_bpb **{sub['val_bpb']:.8f}** (mean of {len(evidence)} seed"
        f"{'s' if len(evidence) > 1 else ''}) | val_loss {sub['val_loss']:.8f} nats | {sub['bytes_total']:,} bytes",
        "",
        sub["blurb"],
        "",
        f"Training: {'no wall-clock cap' if wall <= 0 else f'wall-clock cap {wall:g} s'} per seed, "
        f"{hours:.3f} hours ({hours * 3600:,.0f} s) of training in total over {len(evidence)} seed{'s' if len(evidence) > 1 else ''}"
        + (
            " (unlimited compute track: not intended to meet the 10-minute cutoff)."
            if opts.track == "unlimited"
            else "."
        ),
        "",
        "## Results",
        "",
        seeds_markdown(evidence, sub["bytes_code"]),
        "",
        "final = the sliding-window score when the run evaluated one, else the roundtrip score of the reloaded "
        "artifact; the logs' `final_*_exact` lines carry the same numbers.",
        "",
        "## Sizes",
        "",
        sizes_markdown(cfg, evidence, sub["bytes_code"]),
        "## Significance",
        "",
        significance_markdown(comparisons),
        "",
        "## Configuration",
        "",
        f"Preset `{cfg.preset}`; options that differ from the naive baseline:",
        "",
        config_markdown(cfg),
        "",
        "## Reproduce",
        "",
        reproduce_markdown(cfg, evidence),
        "",
    ]
    if pictures:
        sections += ["## Plots", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    sections += [
        "## Files",
        "",
        f"`README.md`, `submission.json`, `{SCRIPT_NAME}` (compact export, its literal bytes "
        "are the code bytes), "
        + ", ".join(f"`train_seed{ev.seed}.log`" for ev in evidence)
        + ", `requirements.txt`"
        + ("".join(f", `{p}`" for p in pictures))
        + ".",
        "",
        "Assembled by `pgolf submit` (pgolf/submit/submitfolder.py).",
        "",
    ]
    return "\n".join(sections)


# ---------------------------------------------------------------- assembly


def _size_chart(cfg: RunConfig, evidence: list[SeedEvidence], code_bytes: int, folder: Path) -> str | None:
    """size.png of the largest seed's artifact, when its file is still there."""
    from pgolf.model.inventory import quant_groups_for
    from pgolf.quant.plan import measure_table, plot_table

    ev = max(evidence, key=lambda e: int(e.run.summary.get("artifact_bytes", 0)))
    artifact = ev.run.run_dir / Path(str(ev.run.summary.get("artifact_path", ""))).name
    if not artifact.is_file():
        return None
    counted_code = code_bytes if cfg.quant.count_code_bytes else 0
    groups = quant_groups_for(model_config_from_dict(ev.run.config["model"]))
    plot_table(
        measure_table(artifact, groups, counted_code, int(ev.run.summary.get("size_cap_bytes") or SIZE_CAP_BYTES)),
        folder / "size.png",
    )
    return "size.png"


def _baseline_logs(specs: list[str], logs_dir) -> list[TrainLog]:
    """Train logs of local baseline runs (for the plots); leaderboard entries have none."""
    logs = []
    for text in specs:
        for spec in split_specs(text):
            if Path(spec).is_dir() and (Path(spec) / "summary.json").is_file():
                try:
                    logs.append(log_for_spec(spec, logs_dir))
                except PgolfError:
                    pass
    return logs


def validate_runs(evidence: list[SeedEvidence], track: str) -> None:
    """Every refusal before anything is written."""
    check_track(evidence, track)
    check_same_recipe(evidence)
    for ev in evidence:
        check_log_matches_summary(ev)
    check_exported_code(evidence)


def assemble(specs: list[str], opts: SubmitOptions) -> Path:
    """Check the runs, then write the record folder; returns its path."""
    evidence = sorted(gather(specs, opts.logs_dir), key=lambda ev: ev.seed)
    validate_runs(evidence, opts.track)
    cfg = run_config(evidence[0].run)
    name = safe_name(opts.name)
    date = opts.date or _dt.date.today().isoformat()
    folder = opts.out_root / TRACK_DIRS[opts.track] / f"{date}_{name}"
    if folder.exists() and any(folder.iterdir()) and not opts.force:
        raise SubmissionError(f"{folder} already exists (pass --force to replace it)")
    code_tmp = folder.parent / f".{folder.name}.{SCRIPT_NAME}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    code_bytes = export_script(submission_config(cfg), code_tmp)
    try:
        for ev in evidence:
            check_cap(ev, code_bytes)
        comparisons = [(spec, compare_samples(_sample_of(evidence, name), load_side(spec))) for spec in opts.baseline]
    except PgolfError:
        code_tmp.unlink(missing_ok=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    code_tmp.replace(folder / SCRIPT_NAME)
    (folder / READABLE_NAME).write_text(readable_bundle(submission_config(cfg)), encoding="utf-8")
    for ev in evidence:
        shutil.copyfile(ev.log.path, folder / f"train_seed{ev.seed}.log")
    (folder / "requirements.txt").write_text(requirements_text(cfg))
    pictures = []
    if opts.plots:
        mine = {ev.log.path.resolve() for ev in evidence}
        others = [log for log in _baseline_logs(opts.baseline, opts.logs_dir) if log.path.resolve() not in mine]
        plot_runs([ev.log for ev in evidence] + others, folder)
        pictures += ["train_loss.png", "val_bpb.png"]
        if (chart := _size_chart(cfg, evidence, code_bytes, folder)) is not None:
            pictures.append(chart)
    sub = submission_json(evidence, opts, name, date, code_bytes, opts.blurb or default_blurb(cfg, evidence[0]))
    (folder / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
    (folder / "README.md").write_text(readme_text(cfg, evidence, sub, opts, comparisons, pictures))
    return folder


def _sample_of(evidence: list[SeedEvidence], label: str) -> Sample:
    sample = Sample(label=label)
    for ev in evidence:
        final = ev.run.final()
        sample.add(ev.seed, final["val_loss"], final["val_bpb"])
    return sample
