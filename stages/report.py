"""DVC stage `report`: figures and tables of the run -> reports/report.html and report.md, logged
to MLflow."""

from soo.pipeline.report import main
from soo.runtime import run_entry

if __name__ == "__main__":
    run_entry(main)
