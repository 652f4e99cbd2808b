"""A model source: ``tv:NAME[,img_size=N]`` diagnoses torchvision's ``VisionTransformer`` models
(``tv:vit_b_16``), random-initialised with torch seed 0, or with ``--weights FILE`` (a state_dict).
Tokens are read with forward hooks on ``encoder.layers``; the last block's entry is the encoder's
output after its final LayerNorm; one prefix token (the class token)."""

import torch

from viny_probe.analysis.sources import ModelSource, TokenModel, register_source
from viny_probe.errors import VinyError


def load(spec, options) -> TokenModel:
    import torchvision

    what = f"tv:{spec.target}"
    names = torchvision.models.list_models(module=torchvision.models)
    if spec.target not in names or not spec.target.startswith("vit_"):
        vits = ", ".join(n for n in names if n.startswith("vit_"))
        raise VinyError(f"{what}: not a torchvision ViT; one of {vits}")
    size = int(options.image_size or spec.options.get("img_size", 224))
    torch.manual_seed(0)
    model = torchvision.models.get_model(spec.target, weights=None, image_size=size).eval()
    notes = ["random init (torch seed 0)"]
    if options.weights is not None:
        model.load_state_dict(torch.load(options.weights, map_location="cpu", weights_only=True))
        notes = [f"weights from {options.weights}"]

    def final(images: torch.Tensor) -> torch.Tensor:
        x = model._process_input(images)
        return model.encoder(torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1))

    return TokenModel.from_blocks(
        model,
        list(model.encoder.layers),
        final,
        prefix_tokens=1,
        dim=model.hidden_dim,
        patch_size=model.patch_size,
        image_size=size,
        source=spec.text or what,
        name=spec.target,
        config={"torchvision": spec.target, "image_size": size},
        notes=notes,
        weights_from=options.weights,
    )


register_source(ModelSource("tv", load, "a torchvision ViT (example plugin)", "tv:vit_b_16,img_size=64"))
