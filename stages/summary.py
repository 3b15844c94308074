"""DVC stage `summary`: base vs SOO over seeds -> metrics/summary.json and DVC plot data."""

from soo.pipeline.summary import main
from soo.runtime import params_entry

if __name__ == "__main__":
    params_entry(main, __doc__)
