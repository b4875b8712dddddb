"""Reporting: records to tables and figures, Grad-CAM, and the MoE lens on trained models."""
