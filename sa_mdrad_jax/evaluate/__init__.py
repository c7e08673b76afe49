"""Evaluation of trained models (clean accuracy here; the attack suite builds on it)."""
