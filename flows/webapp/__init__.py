"""The browser app of ``lineargan-edit serve`` (:mod:`flows.webapp.server`)."""
