"""Training: one loop for every gradient-trained model, staged and adversarial recipes, run directories."""

from segue.training.recipes import fit

__all__ = ["fit"]
