"""Integrations with serving frameworks (diffusers first); imported lazily."""
