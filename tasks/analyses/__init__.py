"""The analyses: one folder each (science, step, renderer, SPEC), their shared contract, the
registry that lists them and the runner that carries each through its lifecycle."""
