"""Optional bridges to other tools. Nothing here is imported by ``import converse_plugin``: import a
bridge when you use it (e.g. ``import converse_plugin.integrations.spandrel``); each needs its extra."""
