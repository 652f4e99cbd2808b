"""Where a training step's time goes, timed directly (no profiler): the bound on any fp32 speed-up.

    python benchmarks/step_breakdown.py                 # ViNy, simmim, fp32, batch 64, 2 threads
    python benchmarks/step_breakdown.py --json --repeats 7

Times, in interleaved rounds (median per figure, as `viny bench` does):
- the loop's whole training step (ViNy, in the loop's micro-batches) and the plain baseline's
  (PlainViT, the whole batch at once), same batch;
- the model's Linear products alone, forward + backward, at the model's shapes (patch embedding,
  qkv, output projection, MLP x depth, plus the SimMIM decoder);
- attention's core alone, softmax(q k^T / sqrt(d)) v forward + backward, at the model's shapes
  x depth (what ViNy runs on a CPU, written out);
- the rest = whole step - the two above (LayerNorm, GELU, residual adds, loss, AdamW, augmentation).

With the products' time P and the attention's A, no fp32 implementation that runs the same products
and attention kernels can step faster than P + A: the script prints the speed-up over the baseline
that this bound allows. torch.profiler is not used because on a CPU its overhead inflates small ops, so
it blamed costs that removing them did not save (docs/performance.md has the case).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from viny_probe.model import attend, model_config
from viny_probe.perf import TrainerSetup, bench_data, fixed_batch, make_trainer
from viny_probe.perf.baseline import PlainViT


def _linear_products(cfg, batch: int) -> list[tuple[nn.Linear, torch.Tensor]]:
    tokens = cfg.num_patches  # SimMIM: the study's token path, no CLS token in the blocks
    inner = cfg.heads * cfg.dim_head
    shapes = [(cfg.patch_dim, cfg.dim, cfg.num_patches)]  # patch embedding
    shapes += [(cfg.dim, 3 * inner, tokens), (inner, cfg.dim, tokens)] * cfg.depth  # qkv, proj
    shapes += [(cfg.dim, cfg.mlp_dim, tokens), (cfg.mlp_dim, cfg.dim, tokens)] * cfg.depth  # MLP
    shapes += [(cfg.dim, cfg.patch_dim, cfg.num_patches)]  # SimMIM decoder
    out = []
    for i, (fan_in, fan_out, t) in enumerate(shapes):
        # every input needs its gradient except the patch embedding's (the images)
        x = torch.randn(batch, t, fan_in, requires_grad=i > 0)
        out.append((nn.Linear(fan_in, fan_out, bias=fan_out != 3 * inner), x))
    return out


def breakdown(model: str = "viny", batch: int = 64, repeats: int = 5, warmup: int = 1) -> dict:
    cfg = model_config(model)
    data = bench_data(cfg, batch, "random")
    device = torch.device("cpu")
    viny = make_trainer("simmim", cfg, data, device, TrainerSetup("fp32"))
    plain = make_trainer("simmim", cfg, data, device, TrainerSetup("fp32", encoder_cls=PlainViT))
    plain.micro_batch = batch  # the plain way: the whole batch at once, as bench's baseline
    b = fixed_batch(data, batch, device)
    gen = torch.Generator().manual_seed(0)
    linears = _linear_products(cfg, batch)
    tokens = cfg.num_patches  # SimMIM: the study's token path, no CLS token in the blocks
    qkv = [torch.randn(batch, cfg.heads, tokens, cfg.dim_head, requires_grad=True) for _ in range(3)]
    grad_out = torch.randn(batch, cfg.heads, tokens, cfg.dim_head)

    def products():
        for layer, x in linears:
            layer(x).backward(torch.ones(()).expand(*x.shape[:2], layer.out_features))

    def attention():
        for _ in range(cfg.depth):
            attend(*qkv).backward(grad_out)

    figures = {
        "step": lambda: viny.step(b, gen),
        "baseline_step": lambda: plain.step(b, gen),
        "linear_products": products,
        "attention_core": attention,
    }
    times: dict[str, list[float]] = {k: [] for k in figures}
    for i in range(warmup + repeats):
        for name, fn in figures.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    bound = ms["linear_products"] + ms["attention_core"]
    return {
        "model": model,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "ms": ms,
        "spread_ms": {k: [1e3 * min(v), 1e3 * max(v)] for k, v in times.items()},
        "rest_ms": ms["step"] - bound,
        "step_img_per_s": batch / ms["step"] * 1e3,
        "baseline_img_per_s": batch / ms["baseline_step"] * 1e3,
        "max_speedup_over_baseline": ms["baseline_step"] / bound,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="viny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = breakdown(args.model, args.batch, args.repeats)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    ms = out["ms"]
    print(
        f"{out['model']}, simmim fp32, batch {out['batch']}, {out['threads']} threads (medians of {out['repeats']})"
    )
    for name in ("step", "baseline_step", "linear_products", "attention_core"):
        print(f"  {name:16s} {ms[name]:8.1f} ms  ({100 * ms[name] / ms['step']:5.1f} % of the step)")
    print(f"  {'rest':16s} {out['rest_ms']:8.1f} ms")
    print(
        f"  step {out['step_img_per_s']:.1f} img/s, baseline {out['baseline_img_per_s']:.1f} img/s; "
        f"products + attention alone would be {out['max_speedup_over_baseline']:.2f}x the baseline"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
