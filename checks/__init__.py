"""Runnable verification of statements S1-S13 (built by the theory/checks issue)."""
