"""DVC stage `register`: log the chosen seed's SOO model as an MLflow pyfunc model, register a
version tagged with its evaluation, and point `candidate` at it -> metrics/registered.json."""

from soo.pipeline.register import main
from soo.runtime import params_entry

if __name__ == "__main__":
    params_entry(main, __doc__)
