"""A mask dataset with its own value map: images/<id>.jpg + masks/<id>.png, 0 sky, 1 disc, 2 square,
255 not labelled. Point --data-root at the folder (or at its parent holding example-shapes/)."""

from viny_probe.data.base import MaskClasses
from viny_probe.data.masks import mask_folder_dataset
from viny_probe.data.spec import register_dataset

SHAPES = MaskClasses(names=("sky", "disc", "square"), values={0: 0, 1: 1, 2: 2}, ignore=(255,), background=0)

register_dataset(
    mask_folder_dataset(
        "example-shapes", SHAPES, "discs and squares on sky, masks 0/1/2 + 255 ignored (example plugin)"
    )
)
