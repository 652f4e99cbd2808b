"""A sweep's results rows: one per finished stage, read from its folder and its chain's stage.json
files, into ``DIR/results.csv`` (flat columns) and ``DIR/results.jsonl`` (the same rows with full
metrics, every config of the chain and provenance); and whether a chain is comparable with the study.

Both files are only ever rewritten whole (temp file + rename) under ``DIR/results.lock`` (flock), so
workers sharing ``DIR`` never leave a torn line or a row twice in them. Stages trained before checkpoint
format 2 are left out (``layout.legacy_stages``).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import platform
import time
from pathlib import Path

from .. import __version__
from ..checkpoint import atomic_write_text
from ..data.spec import dataset_spec
from ..errors import VinyError
from ..registry import REGIMES
from ..runlock import FINAL
from .kinds import STAGE_KINDS, kind_of, role_of
from .layout import is_legacy_stage, read_chain, stage_dir

# Every row's own columns; then the columns the registered regimes declare (Regime.result_columns);
# then TAIL_COLUMNS.
STAGE_COLUMNS = [
    "stage",
    "kind",
    "group",
    "condition",
    "pretrain_size",
    "intermediate",
    "finetune_size",
    "seed",
    "split_seed",
    "model",
    "preset",
    "phase",
    "pretrain_dataset",
    "intermediate_dataset",
    "dataset",
    "train_images",
    "test_size",
    "epochs",
    "comparable",
    "not_comparable_because",
]
TAIL_COLUMNS = ["final_loss", "train_seconds", "finished_at", "parent"]


def regime_columns() -> list[str]:
    """The result columns of every registered regime, in registration order, each once."""
    return list(dict.fromkeys(c for regime in REGIMES.values() for c in regime.result_columns))


def csv_columns() -> list[str]:
    """results.csv's header: a stage's columns, its regime's results (any registered regime's), the tail."""
    return [*STAGE_COLUMNS, *regime_columns(), *TAIL_COLUMNS]


COMPARABLE_PRESETS = ("paper", "authors")


def comparability(chain: list[dict]) -> list[str]:
    """Why a fine-tuning result can not be set beside the paper's (empty list = comparable). Both full
    presets are comparable when each stage ran its preset's own schedule: `paper` is Table A1's text,
    `authors` the study's own code, which produced the published numbers (docs/fidelity.md)."""
    from ..config import PAPER, TrainConfig

    reasons: list[str] = []
    for info in chain:
        cfg = TrainConfig.from_dict(info["config"])
        kind = info["kind"]
        study = kind_of(kind).dataset if kind_of(kind) else cfg.dataset
        if dataset_spec(cfg.dataset).embedded:
            reasons.append("embedded data")
        elif cfg.dataset != study:
            reasons.append(f"{kind} on {cfg.dataset}")
        if cfg.preset not in COMPARABLE_PRESETS:
            reasons.append(f"{cfg.preset} preset")
        if cfg.model != "viny":
            reasons.append(f"{cfg.model} model")
        phase = cfg.phase or REGIMES.get(cfg.regime).phase
        if cfg.preset in COMPARABLE_PRESETS:  # the preset's own schedule for this stage, recipe included
            sched = TrainConfig(
                regime=cfg.regime, preset=cfg.preset, dataset=cfg.dataset, phase=phase
            ).resolved()
        else:
            sched = PAPER[phase]
        if (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.gamma, tuple(cfg.milestones)) != (
            sched.epochs,
            sched.lr,
            sched.weight_decay,
            sched.gamma,
            tuple(sched.milestones),
        ):
            reasons.append(
                "schedule differs from the study's code"
                if cfg.preset == "authors"
                else "schedule differs from Table A1"
            )
        if cfg.regime == "segment" and cfg.test_size != 1000:
            reasons.append(f"test set of {cfg.test_size}")
    return list(dict.fromkeys(reasons))


def stage_row(out: Path, stage_id: str) -> dict | None:
    """One results row (flat ``csv`` part plus full ``results``/``configs``) of a finished stage."""
    d = stage_dir(out, stage_id)
    if not (d / FINAL).exists() or not (d / "results.json").exists() or not (d / "stage.json").exists():
        return None
    chain = read_chain(out, stage_id)
    info = chain[-1]
    results = json.loads((d / "results.json").read_text())
    cfg = info["config"]
    labels = info.get("labels", {})
    kind = info["kind"]
    by_role: dict[str, dict] = {}  # the chain's first stage of each role (kinds.ROLES)
    for c in chain:
        by_role.setdefault(role_of(c["kind"]) or "", c)
    intermediate = by_role["intermediate"]["kind"] if "intermediate" in by_role else None
    pretrain_size = labels.get("pretrain_size", 0) or 0
    group = ""
    if role_of(kind) == "final":
        group = "intermediate" if intermediate else ("baseline" if pretrain_size == 0 else "pretrain")
    reasons = comparability(chain)
    history = (
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if (d / "metrics.jsonl").exists()
        else []
    )
    data_info = json.loads((d / "data.json").read_text()) if (d / "data.json").exists() else {}
    row = {
        "stage": stage_id,
        "kind": kind,
        "group": group,
        "condition": f"pretrain={pretrain_size}" + (f"+{intermediate}" if intermediate else ""),
        "pretrain_size": pretrain_size,
        "intermediate": intermediate or "",
        "finetune_size": labels.get("finetune_size", ""),
        "seed": cfg["seed"],
        "split_seed": cfg.get("split_seed", ""),
        "model": cfg["model"],
        "preset": cfg["preset"],
        "phase": cfg.get("phase") or "",
        "pretrain_dataset": by_role.get("pretrain", {}).get("config", {}).get("dataset", ""),
        "intermediate_dataset": by_role.get("intermediate", {}).get("config", {}).get("dataset", ""),
        "dataset": cfg["dataset"],
        "train_images": data_info.get("train", ""),
        "test_size": cfg["test_size"],
        "epochs": cfg["epochs"],
        "comparable": not reasons,
        "not_comparable_because": "; ".join(reasons),
        "final_loss": results.get("final", {}).get("loss", ""),
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((d / FINAL).stat().st_mtime)),
        "parent": info.get("parent") or "",
    }
    if cfg["regime"] in REGIMES:  # a plugin's regime that is not loaded now: its results stay in jsonl
        row.update(REGIMES.get(cfg["regime"]).result_row(results))
    row = {k: row.get(k, "") for k in csv_columns()}
    full = {
        **row,
        "labels": labels,
        "results": results,
        "configs": [{"stage": c["id"], "kind": c["kind"], "config": c["config"]} for c in chain],
        "provenance": _provenance(info),
    }
    return full


def _provenance(info: dict) -> dict:
    import torch

    return {
        "viny_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        **info.get("worker", {}),
    }


def _csv_line(row: dict, header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerow(row)
    return buf.getvalue()


@contextlib.contextmanager
def _results_lock(out: Path):
    """Hold ``DIR/results.lock`` (flock) while results.csv/jsonl are read and rewritten, so that workers
    sharing ``DIR`` never lose or repeat each other's rows."""
    with open(out / "results.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_results(out: Path, rows: list[dict]) -> None:
    text = (
        "".join(_csv_line(r, header=(i == 0)) for i, r in enumerate(rows))
        if rows
        else ",".join(csv_columns()) + "\n"
    )
    atomic_write_text(out / "results.csv", text)
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_row(out: Path, stage_id: str) -> None:
    """Add a finished stage's row to results.csv/jsonl unless it is there already. Both files are
    rewritten whole (temp file + rename) under the results lock: never a torn line or a row twice."""
    row = stage_row(out, stage_id)
    if row is None:
        return
    with _results_lock(out):
        rows = load_results(out) if (out / "results.jsonl").exists() else []
        if any(r["stage"] == stage_id for r in rows):
            return
        _write_results(out, [*rows, json.loads(json.dumps(row, default=str))])


def collect_rows(out: str | Path) -> list[dict]:
    """Rows of every finished stage in ``out`` (whatever plan ran it), in a stable order; stages from
    before checkpoint format 2 are left out (see ``legacy_stages``)."""
    out = Path(out)
    rows = []
    for d in sorted((out / "stages").glob("*")) if (out / "stages").exists() else []:
        if is_legacy_stage(d):
            continue
        row = stage_row(out, d.name)
        if row is not None:
            rows.append(row)

    order = {kind: i for i, kind in enumerate(STAGE_KINDS)}

    def key(r):
        ft = r["finetune_size"] if r["finetune_size"] != "" else -1
        return (
            order.get(r["kind"], len(order)),
            r["pretrain_size"],
            r["intermediate"],
            ft,
            r["seed"],
            r["stage"],
        )

    return sorted(rows, key=key)


def rebuild_results(out: str | Path) -> list[dict]:
    """Rewrite results.csv and results.jsonl from all finished stages (atomic replace)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _results_lock(out):
        rows = collect_rows(out)
        _write_results(out, rows)
    return rows


def load_results(out: str | Path, problems: list[str] | None = None) -> list[dict]:
    """The rows of ``DIR/results.jsonl`` (rebuilt from the stage folders when missing). A line that
    is not a whole row (torn by a crash mid-write) is skipped, and said so in ``problems``."""
    path = Path(out) / "results.jsonl"
    if not path.exists():
        if not (Path(out) / "stages").exists():
            raise VinyError(
                f"{out} holds no sweep (no results.jsonl and no stages/); run `viny sweep PLAN --out {out}`"
            )
        return rebuild_results(out)
    seen, rows = set(), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "stage" not in row:
                if problems is not None:
                    problems.append(
                        f"{path} line {number} is not a whole results row (cut short by a crash?) and was "
                        f"skipped; `viny sweep PLAN --out {out}` rebuilds the file from the stage folders"
                    )
                continue
            if row["stage"] not in seen:
                seen.add(row["stage"])
                rows.append(row)
    return rows
