"""Models, registered in BasicSR's MODEL_REGISTRY on import: ConverseModel (and its older name
ConverseDeblurModel), built on the plugin's model base class PluginModel (checkpoint policy)."""
from converse_plugin.models.base_model import PluginModel, plugin_model_class
from converse_plugin.models.converse_deblur_model import ConverseDeblurModel
from converse_plugin.models.converse_model import ConverseModel

__all__ = ['ConverseModel', 'ConverseDeblurModel', 'PluginModel', 'plugin_model_class']
