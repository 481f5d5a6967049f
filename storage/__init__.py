"""Storage layer: owns the Zarr feature/label store layout and the Parquet result layout.

Nothing here imports Prefect; nothing outside here knows a path or a Zarr array name.
"""
