"""Prefect flows that orchestrate the DVC pipeline (to come)."""
