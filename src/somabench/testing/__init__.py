"""Test doubles that a benchmark needs too (so they cannot live under tests/): the scripted,
fault-injecting OpenAI-compatible server. Never used by a run."""
