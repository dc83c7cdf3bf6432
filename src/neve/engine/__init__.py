"""Serving engines: one interface (base.Engine), chosen by name from registry.ENGINES."""
