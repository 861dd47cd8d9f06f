"""Model backends; importing this package fills the registry with the built-in ones."""
from .base import Model, available_models, load_model, register_model  # noqa: F401
from . import analytic  # noqa: F401
from . import builtin  # noqa: F401
