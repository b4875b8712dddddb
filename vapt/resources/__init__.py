"""Data files shipped with the package (the paper's published numbers)."""
