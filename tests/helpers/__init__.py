"""Shared test helpers: a loopback OpenAI-compatible server, client factories, model fixtures."""
