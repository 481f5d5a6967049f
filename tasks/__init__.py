"""Thin Prefect tasks over ``lineargan.jobs``: resolve references, call one function, return a reference."""
