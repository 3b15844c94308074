"""One function a pipeline stage: read params and inputs, call the library, write outputs.

The entry points (`stages/` for DVC, `flows/` for Prefect, the `soo` CLI) call these; nothing
here imports them.
"""
