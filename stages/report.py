"""DVC stage `report`: figures and tables of the run -> reports/report.html and report.md, logged
to MLflow."""

from soo.pipeline.report import main
from soo.runtime import params_entry

if __name__ == "__main__":
    params_entry(main, __doc__)
