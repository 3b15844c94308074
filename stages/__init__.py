"""DVC stage entry points, one module per stage in dvc.yaml: `python -m stages.<name>`."""
