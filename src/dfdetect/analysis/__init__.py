"""Analyses built on the runtime and the engine: explanations (CAMs), classic forensics and reports,
robustness sweeps and audits, backbone comparison, speed benchmarks."""
