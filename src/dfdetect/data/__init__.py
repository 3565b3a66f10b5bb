"""Data: safe image decoding, dataset layouts and split manifests, train/eval transforms."""
