"""The runtime layer: the one predict path (``pipeline``) from files to ``Prediction`` records, and video scoring
on top of it. Backends and the ``Detector`` (``dfdetect.inference``) score through this pipeline."""
