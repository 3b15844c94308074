"""DVC stage `summary`: base vs SOO over seeds -> metrics/summary.json and DVC plot data."""

from soo.pipeline.summary import main
from soo.runtime import run_entry

if __name__ == "__main__":
    run_entry(main)
