"""Prefect flows: orchestration, retries, fan-out and schedules around the DVC pipeline.

- `soo-pipeline` (flows/pipeline.py): the DVC stages one by one as tasks, then register/promote.
- `soo-sweep` (flows/sweep.py): a grid of train settings x seeds, one task a point -> a table.
- `soo-promote` (flows/promote.py): the gated promotion on its own.
"""
