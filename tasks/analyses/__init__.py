"""One pipeline module per analysis, their shared contract, and the registry that lists them."""
