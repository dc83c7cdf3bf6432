"""Serving engines: one interface (base.Engine), chosen by the `engine` setting."""
