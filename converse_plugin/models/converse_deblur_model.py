"""ConverseDeblurModel: the name older option files use for :class:`~converse_plugin.models.converse_model.ConverseModel`."""
from basicsr.utils.registry import MODEL_REGISTRY

from converse_plugin.models.converse_model import ConverseModel


@MODEL_REGISTRY.register()
class ConverseDeblurModel(ConverseModel):
    """Exactly :class:`ConverseModel` (kept so that ``model_type: ConverseDeblurModel`` files keep working)."""
