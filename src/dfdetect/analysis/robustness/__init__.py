"""Robustness, leakage and calibration: what a single in-distribution accuracy number does not tell.

- ``perturb``: deterministic image perturbations (JPEG, resizing, blur, noise, crop, format control);
- ``sweep``: score a model under every perturbation and tabulate/plot the metrics (``dfdetect robustness``);
- ``audit``: near-duplicates across splits and format shortcuts between classes (``dfdetect audit``);
- ``calibration``: ECE, reliability diagrams and temperature scaling (``dfdetect calibrate``).

Submodules are imported on demand so ``import dfdetect.analysis.robustness`` stays light.
"""
