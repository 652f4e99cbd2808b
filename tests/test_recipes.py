"""The presets' stage recipes (config.RECIPES) and how the regimes apply them: `--preset authors` is the
study's code stage by stage, `--preset paper` viny's own choices where the paper is silent."""

import pytest
import torch

from viny_probe.config import TrainConfig
from viny_probe.data.augment import normalize
from viny_probe.errors import VinyError
from viny_probe.heads import SimMIMHead
from viny_probe.model import MODEL_PRESETS
from viny_probe.trainers.classify import Classify
from viny_probe.trainers.segment import Segment
from viny_probe.trainers.simmim import SimMIM
from viny_probe.trainers.spatial import Spatial

# (regime, dataset, phase) -> (lr, weight_decay, batch, mixup, augment, mask_token_std, inputs); None:
# an option the regime does not take (Regime.Options)
STAGES = {
    "pretrain": ("simmim", "imagenet", None),
    "cls-intel A3": ("classify", "intel", None),
    "cls-intel T2": ("classify", "intel", "geometry"),
    "cls-pets T2": ("classify", "pets", "geometry"),
    "spatial T2": ("spatial", "pets", "geometry"),
    "finetune": ("segment", "pets", None),
}
EXPECTED = {
    "authors": {
        "pretrain": (1e-3, 0.05, 64, None, "crop", 1.0, None),
        "cls-intel A3": (8e-4, 0.0, 64, 0.1, "flip-contrast", None, "normalized"),
        "cls-intel T2": (8e-4, 0.0, 64, 0.0, "flip-contrast", None, "normalized"),
        "cls-pets T2": (1e-3, 0.01, 64, 0.0, "flip", None, "normalized"),
        "spatial T2": (5e-4, 0.0, 64, None, "flip-contrast", None, "raw"),
        "finetune": (2e-3, 1e-4, 64, None, "flip-contrast", None, "raw"),
    },
    "paper": {
        "pretrain": (1e-4, 0.05, 64, None, "crop", 0.02, None),
        "cls-intel A3": (8e-4, 0.0, 64, 0.0, "crop", None, "normalized"),
        "cls-intel T2": (8e-4, 0.0, 64, 0.0, "crop", None, "normalized"),
        "cls-pets T2": (8e-4, 0.0, 64, 0.0, "crop", None, "normalized"),
        "spatial T2": (8e-4, 0.0, 64, None, "flip", None, "normalized"),
        "finetune": (2e-3, 1e-4, 64, None, "flip-contrast", None, "normalized"),
    },
}


def _resolved(preset: str, stage: str, **options) -> TrainConfig:
    regime, dataset, phase = STAGES[stage]
    return TrainConfig(regime=regime, preset=preset, dataset=dataset, phase=phase, **options).resolved()


@pytest.mark.parametrize("preset", ["authors", "paper"])
def test_each_stage_resolves_to_its_recipe(preset):
    """Every stage of the study under each full preset, value by value; the embedded stand-ins get the
    same recipe. Mutants applied: the Table 2 CLS-Intel row removed from RECIPES (MixUp 0.1 leaks into
    Table 2: fails), the CLS-Pets weight decay 0.01 -> 0 (fails), the Spatial row's phase-free key made
    "intermediate" (Table 2's Spatial loses its recipe: fails)."""
    for stage, want in EXPECTED[preset].items():
        cfg = _resolved(preset, stage)
        got = (
            cfg.lr,
            cfg.weight_decay,
            cfg.batch_size,
            cfg.regime_options.get("mixup"),
            cfg.augment,
            cfg.regime_options.get("mask_token_std"),
            cfg.regime_options.get("inputs"),
        )
        assert got == want, stage
    toy = TrainConfig(regime="spatial", preset=preset, dataset="toy-pets", phase="geometry").resolved()
    lr, _, _, _, augment, _, inputs = EXPECTED[preset]["spatial T2"]
    assert (toy.lr, toy.augment, toy.options.inputs) == (lr, augment, inputs)


def test_options_beat_the_recipe_and_bad_values_name_their_flag():
    """An explicit value wins over the preset's recipe (lr and augment included); a value the regime
    does not offer is one line naming the flag. Mutant applied: resolved() filling recipe values over
    explicit ones (fails)."""
    cfg = _resolved("authors", "spatial T2", lr=1e-2, augment="flip", inputs="normalized")
    assert (cfg.lr, cfg.augment, cfg.options.inputs) == (1e-2, "flip", "normalized")
    with pytest.raises(VinyError, match="--augment must be flip or flip-contrast for spatial"):
        _resolved("paper", "spatial T2", augment="crop")
    with pytest.raises(VinyError, match="--inputs must be normalized or raw"):
        _resolved("paper", "finetune", inputs="imagenet")


def test_an_older_config_json_reads_as_the_run_it_was():
    """A config.json written before mask_token_std / inputs existed, with the "crop" every regime then
    recorded, compares equal to today's resolution of the same run (so --resume and sweeps accept it).
    Mutant applied: from_dict without the ADDED_FIELDS fill (differences listed: fails)."""
    for stage in ("spatial T2", "finetune", "pretrain"):
        new = _resolved("paper", stage)
        old = {k: v for k, v in new.to_dict().items() if k not in ("mask_token_std", "inputs")}
        old["augment"] = "crop"
        assert TrainConfig.from_dict(old).differences(new) == []


CFG = MODEL_PRESETS["tiny"]


def test_mask_token_init_follows_the_config():
    """SimMIM's head draws its mask token with the config's std: about 1 under `authors` (the code's
    standard normal), about 0.02 otherwise. Mutant applied: SimMIM.make_head ignoring mask_token_std
    (fails)."""
    for std in (1.0, 0.02):
        regime = SimMIM()
        regime.mask_token_std = std  # what load_data takes from cfg.options.mask_token_std
        torch.manual_seed(0)
        head = regime.make_head(MODEL_PRESETS["viny"], None)
        assert abs(float(head.mask_token.detach().std()) - std) < 0.25 * std
    assert abs(float(SimMIMHead(MODEL_PRESETS["viny"]).mask_token.detach().std()) - 0.02) < 0.005


def _images(n: int = 6) -> torch.Tensor:
    s = CFG.image_size
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, s, s), generator=gen, dtype=torch.uint8)


def test_flip_and_raw_inputs_in_prepare():
    """classify --augment flip: each image is itself or its mirror (no crop, no jitter), normalised;
    spatial --augment flip-contrast --inputs raw: values stay in [0, 1] and some image differs from both
    itself and its mirror (the jitter); segment --inputs raw feeds [0, 1] pixels. Mutants applied:
    classify's flip branch cropping (fails), spatial dropping its contrast jitter (fails), encoder_input
    normalising raw inputs (fails)."""
    images = _images()
    x = images.float() / 255
    gen = torch.Generator().manual_seed(0)
    cls = Classify()
    cls.augment, cls.inputs, cls.num_classes = "flip", "normalized", 2
    out = cls.prepare({"images": images, "labels": torch.zeros(6, dtype=torch.long)}, gen)["images"]
    for i in range(6):
        assert any(torch.allclose(out[i], normalize(v[None])[0], atol=1e-5) for v in (x[i], x[i].flip(-1)))

    sp = Spatial()
    sp.targets, sp.augment, sp.inputs, sp.patch_size = "patch-label", "flip-contrast", "raw", CFG.patch_size
    out = sp.prepare({"images": images, "labels": torch.zeros(6, dtype=torch.long)}, gen)["images"]
    assert out.min() >= 0 and out.max() <= 1
    plain = [any(torch.allclose(out[i], v, atol=1e-6) for v in (x[i], x[i].flip(-1))) for i in range(6)]
    assert not all(plain)

    seg = Segment()
    seg.inputs = "raw"
    masks = torch.zeros(6, CFG.image_size, CFG.image_size, dtype=torch.uint8)
    out = seg.prepare({"images": images, "masks": masks}, gen)["images"]
    assert out.min() >= 0 and out.max() <= 1


class _Fixed(torch.nn.Module):
    """Stands in for encoder + head: the same (B, 2, 1, 2) logits whatever the images."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, x, *args, **kwargs):
        return self.logits.expand(x.shape[0], -1, -1, -1) if torch.is_tensor(x) and x.ndim == 4 else x


def test_position_softmax_is_the_codes_prediction_rule():
    """Known answer: class 0 scores 5 at both pixels, class 1 scores 4 and 0. The class argmax says
    class 0 everywhere; the code's rule (log_softmax over each class map's positions first) gives class
    1 at pixel 0, where class 1's map peaks. `authors` fine-tuning resolves to it, `paper` does not.
    Mutants applied: predict_masks ignoring position_softmax (fails); the authors finetune recipe
    without position_softmax (fails)."""
    from viny_probe.trainers.segment import predict_masks

    model = _Fixed(torch.tensor([[[[5.0, 5.0]], [[4.0, 0.0]]]]))
    images = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    assert predict_masks(model, torch.nn.Identity(), images).tolist() == [[[0, 0]]]
    assert predict_masks(model, torch.nn.Identity(), images, position_softmax=True).tolist() == [[[1, 0]]]
    assert _resolved("authors", "finetune").options.position_softmax is True
    assert _resolved("paper", "finetune").options.position_softmax is False


def test_a_raw_input_checkpoint_is_diagnosed_on_raw_pixels():
    """The diagnostics feed an encoder what its run trained on: no mean/std for `inputs: raw` (the
    authors' Spatial and segmentation), ImageNet's otherwise. Mutant applied: viny_token_model ignoring
    the checkpoint's inputs (ImageNet mean for a raw run: fails)."""
    from viny_probe.analysis.sources.viny import viny_token_model
    from viny_probe.data.augment import IMAGENET_MEAN
    from viny_probe.model import ViNy

    encoder = ViNy(CFG)
    raw = viny_token_model(encoder, {"config": {"inputs": "raw"}})
    assert (raw.mean, raw.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert viny_token_model(encoder, {"config": {"inputs": "normalized"}}).mean == IMAGENET_MEAN
