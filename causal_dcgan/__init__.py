"""causal_dcgan package."""
