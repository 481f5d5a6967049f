"""The science of each analysis of the paper: parameters with per-profile defaults, and math."""
