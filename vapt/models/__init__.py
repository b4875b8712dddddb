"""Models: named backbones, prompt generators, and the prompted wrappers for ViT and Swin."""
