"""The benchmark's experiments beside `viny bench`: one regime's training step under alternative settings
(the evidence behind docs/performance.md's suggestions), and fp32 against bf16 loss curves."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable

import torch

from ..model import ViNy, model_config
from ..trainers.loop import resolve_device
from .harness import Trainer, TrainerSetup, bench_data, fixed_batch, make_trainer
from .timing import timed_rounds

DEFAULT_VARIANTS = ("loop", "fused", "foreach", "bf16", "bf16+fused", "compile", "compile+fused")


def precision_agreement(
    model: str = "tiny", regime: str = "simmim", steps: int = 5, batch: int = 16, seed: int = 0
) -> dict:
    """Train the same seeded model ``steps`` steps in fp32 and in bf16 autocast on the same batches
    (CPU) and return both loss curves."""
    cfg = model_config(model)
    data = bench_data(cfg, batch * steps, "random", seed)
    curves = {}
    for p in ("fp32", "bf16"):
        tr = make_trainer(regime, cfg, data, torch.device("cpu"), TrainerSetup(p, lr=1e-3), seed)
        gen = torch.Generator().manual_seed(seed)
        for i in range(steps):
            part = data.subset(list(range(i * batch, (i + 1) * batch)))
            tr.step(fixed_batch(part, batch, tr.device), gen)
        curves[p] = [float(v) for v in tr.losses]
    return curves


def _sdpa_backend(name: str | None):
    """Force F.scaled_dot_product_attention onto one backend ("math": the unfused reference)."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([{"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}[name]])


@contextlib.contextmanager
def _attention_in_fp32(enabled: bool):
    """Experiment: run F.scaled_dot_product_attention in float32 when autocast hands it bf16 (the
    change suggested for model.py in docs/performance.md), by wrapping the function for the duration."""
    if not enabled:
        yield
        return
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def upcast(q, k, v, *args, **kwargs):
        if q.dtype == torch.bfloat16:
            return original(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)
        return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = upcast
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def variant_trainer(variant: str, regime: str, cfg, data, device: torch.device, batch: int) -> Trainer:
    """The trainer a variant (parts joined by "+", see ``step_variants``) describes."""
    parts = set(variant.split("+"))
    opt = "fused" if "fused" in parts else "foreach" if "foreach" in parts else "loop"
    encoder_cls = ViNy
    if "plain" in parts:
        from .baseline import PlainViT as encoder_cls
    setup = TrainerSetup(
        "bf16" if "bf16" in parts else "fp32",
        optimizer=opt,
        compile="compile" in parts,
        encoder_cls=encoder_cls,
    )
    tr = make_trainer(regime, cfg, data, device, setup)
    if "nosync" in parts:
        tr.check_every = 1 << 30
    if "whole" in parts:
        tr.micro_batch = batch
    for part in parts:
        if part.startswith("mb") and part[2:].isdigit():
            tr.micro_batch = int(part[2:])
    return tr


def step_variants(
    device: str = "cpu",
    regime: str = "simmim",
    model: str = "viny",
    batch: int = 64,
    steps: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Training img/s of one regime under alternative settings, each against the loop's default in
    the same run: the evidence behind the suggestions in docs/performance.md. A variant is parts
    joined by "+": loop (as trainers.loop), fused / foreach (AdamW), bf16 (autocast), compile
    (torch.compile the encoder), whole (the whole batch in one forward/backward, no micro-batches),
    mbN (micro-batches of N), nosync (never read the loss on the host; the loop reads it every step
    on a CPU, every 25 on a GPU), sdpa-math (unfused attention), attn-fp32 (attention in float32
    inside bf16 autocast), plain (the baseline's explicit-attention PlainViT in place of ViNy,
    everything else as the variant says). sdpa-math and attn-fp32 act on
    torch's fused attention, which ViNy calls on CUDA only (``model.attend``): elsewhere they change
    nothing. A variant this machine cannot run (e.g. no compiler) is reported as failed."""
    log = log or (lambda _msg: None)
    dev = resolve_device(device)
    cfg = model_config(model)
    data = bench_data(cfg, batch, "random").to(dev)
    fixed = fixed_batch(data, batch, dev)
    runs: dict[str, Callable[[], object]] = {}
    for v in variants:
        parts = set(v.split("+"))

        def run(
            tr=variant_trainer(v, regime, cfg, data, dev, batch),
            sdpa="math" if "sdpa-math" in parts else None,
            fp32_attn="attn-fp32" in parts,
            g=torch.Generator().manual_seed(0),
        ):
            with _sdpa_backend(sdpa), _attention_in_fp32(fp32_attn):
                for _ in range(steps):
                    tr.step(fixed, g)

        runs[v] = run
    out: dict[str, object] = {}
    # one extra warm-up round: torch.compile compiles in the first
    times = timed_rounds(runs, dev, warmup + 1, repeats, log, failures=out)
    for v in variants:
        if v not in out:
            out[v] = batch * steps / statistics.median(times[v])
    return {
        "device": str(dev),
        "regime": regime,
        "model": model,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "rounds": repeats,
        "train_img_per_s": out,
    }
