"""Detector training, inference, plotting, export and evaluation (ultralytics)."""
