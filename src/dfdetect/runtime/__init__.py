"""The runtime layer: the one predict path (``pipeline``) from files to ``Prediction`` records, and video scoring
on top of it. Backends and the ``Detector`` (``dfdetect.runtime.detector``) score through this pipeline."""
