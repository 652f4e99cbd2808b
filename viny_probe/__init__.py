"""viny: train a tiny ViT through the regimes of 'Diminishing Returns in SSL' and probe its patches."""

__version__ = "0.1.0"
