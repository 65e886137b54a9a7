"""Evaluation: ranking metrics and protocols."""
