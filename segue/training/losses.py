"""The losses live with the models that declare them (segue/models/losses.py); re-exported here."""

from segue.models.losses import LOSSES, bce_loss, bpr_loss, get_loss, hinge_loss

__all__ = ["LOSSES", "bce_loss", "bpr_loss", "get_loss", "hinge_loss"]
