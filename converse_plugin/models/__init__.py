"""Models, registered in BasicSR's MODEL_REGISTRY on import: ConverseDeblurModel."""
from converse_plugin.models.converse_deblur_model import ConverseDeblurModel

__all__ = ['ConverseDeblurModel']
