"""Model backends; importing this package fills the registry with the built-in ones."""
from .base import Model, available_models, load_model, register_model  # noqa: F401
from . import analytic  # noqa: F401
from . import builtin  # noqa: F401
from . import stable_audio  # noqa: F401  (registers "stable-audio:<folder>"; diffusers is imported on load)
from . import stable_audio3  # noqa: F401  (registers "stable-audio-3:<folder>")
