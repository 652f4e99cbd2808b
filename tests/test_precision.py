"""bf16 on a CPU that would emulate it: training warns with the slowdown measured here, the bench
skips it and says so; on a native CPU (or with fp32, or on CUDA) nothing is said."""

from __future__ import annotations

import pytest
import torch

from viny_probe import precision
from viny_probe.config import TrainConfig
from viny_probe.errors import VinyWarning
from viny_probe.perf.bench import run_bench
from viny_probe.perf.options import BenchOptions, SingleRunOptions
from viny_probe.trainers import train

CPU = torch.device("cpu")


@pytest.fixture
def emulating_cpu(monkeypatch):
    """A CPU listing no bf16 flag, on which a bf16 product measured 31x the fp32 time."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 31.0)


def test_flags_decide_where_listed(tmp_path, monkeypatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in precision.cpu_flags(info)
    assert precision.cpu_flags(tmp_path / "absent") is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    assert precision.cpu_bf16_native() == (True, "CPU flags: avx512_bf16")


def test_without_flags_a_measurement_decides(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 30.0)
    native, how = precision.cpu_bf16_native()
    assert not native and "30.0x" in how


def test_emulated_bf16_note_only_where_it_applies(emulating_cpu) -> None:
    """Mutant: emulated_bf16_note ignoring the flags (always None) -> no note here."""
    note = precision.emulated_bf16_note(CPU, "bf16")
    assert "emulated" in note and "31x" in note and "--precision fp32" in note
    assert precision.emulated_bf16_note(CPU, "fp32") is None
    assert precision.emulated_bf16_note(torch.device("cuda"), "bf16") is None


def test_training_in_emulated_bf16_warns(emulating_cpu, tmp_path) -> None:
    cfg = TrainConfig(
        regime="simmim",
        model="tiny",
        epochs=1,
        batch_size=8,
        train_size=8,
        test_size=8,
        device="cpu",
        precision="bf16",
    )
    with pytest.warns(VinyWarning, match="31x the fp32 time"):
        train(cfg, tmp_path / "run", progress=False)


def test_bench_skips_emulated_bf16_and_says_so(emulating_cpu) -> None:
    """Mutant: run_bench without _native_precisions -> a bf16 row is measured (and no skip recorded)."""
    result = run_bench(
        BenchOptions(
            device="cpu",
            precisions=("fp32", "bf16"),
            batch=4,
            model="tiny",
            regimes=("simmim",),
            steps=1,
            warmup=0,
            repeats=1,
            peak_sizes=(64,),
        ),
        SingleRunOptions(baseline=None, epoch=False),
    )
    assert {r["precision"] for r in result["regimes"]} == {"fp32"}
    assert "31x" in result["skipped_precisions"]["bf16"]


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_where_native_and_the_run_records_which(tmp_path, monkeypatch, native, expected) -> None:
    """`--precision auto` (the commands' default) trains in bf16 on a CPU with native bf16 and in fp32
    elsewhere, and config.json records the precision it resolved to. Mutant: Run not resolving "auto"
    (config.json then says "auto" and the run trains in fp32 everywhere) fails here."""
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: (native, "test"))
    assert precision.resolve_precision("auto", CPU) == expected
    assert precision.resolve_precision("fp32", CPU) == "fp32"
    cfg = TrainConfig(regime="simmim", model="tiny", epochs=1, batch_size=8, train_size=8, test_size=8)
    cfg.precision = "auto"
    train(cfg, tmp_path / "run", progress=False)
    import json

    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == expected


def test_auto_on_cuda_asks_torch(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve_precision("auto", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve_precision("auto", torch.device("cuda")) == "bf16"
