"""Models, registered in BasicSR's MODEL_REGISTRY on import: ConverseDeblurModel and ConverseModel (the same
class under a general name: kernel feeding, tiled validation, AMP and torch.compile)."""
from converse_plugin.models.converse_deblur_model import ConverseDeblurModel, ConverseModel

__all__ = ['ConverseDeblurModel', 'ConverseModel']
