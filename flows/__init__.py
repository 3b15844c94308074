"""Prefect flows: orchestration, retries, fan-out and schedules around the DVC pipeline.

- `soo-pipeline` (flows/pipeline.py): the DVC stages one by one as tasks, then register/promote.
- `soo-sweep` (flows/sweep.py): seeds x layers x learning rates as parallel tasks -> a table.
- `soo-promote` (flows/promote.py): the gated promotion on its own.
"""
