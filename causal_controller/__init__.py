"""causal_controller package."""
