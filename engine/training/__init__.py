"""Training code for the built-in model. Inference (engine.models) never imports this package."""
