"""Pipeline steps as plain functions (cache, fit, evaluate, Table 1, the analyses, the index),
plus their thin Prefect task wrappers in :mod:`tasks.prefect_tasks`."""
