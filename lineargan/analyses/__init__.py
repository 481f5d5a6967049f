"""Science several analyses share (and lineargan-edit uses): few-shot LSEs, the geometry of
unit features and pools, SCS and SIE. An analysis's own science is tasks/analyses/<name>/science.py."""
