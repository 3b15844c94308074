"""DVC stage `promote` (and `soo promote`): move `champion` to the candidate when it passes every
gate in `promote:` and beats the current champion -> metrics/promotion.json. A refused promotion
is an outcome, not an error: the champion stays and the failed gates are printed."""

from soo.pipeline.promote import main
from soo.runtime import run_entry

if __name__ == "__main__":
    run_entry(main)
