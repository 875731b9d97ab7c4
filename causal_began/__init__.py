"""causal_began package."""
