"""figure_scripts package."""
