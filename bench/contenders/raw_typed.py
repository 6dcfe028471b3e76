"""The reference loop (raw_loop.py) plus the cost of typed events, without kit.

Each decoded record is validated into a plain pydantic model, copied with `ok` flipped
(`model_copy`, as the kit contender's handler does), and the copy's `__dict__` encoded.
Compare kit with this to separate kit's own overhead from what pydantic events cost.

Run alone (the driver normally does this):
    PYTHONPATH=. python -m bench.contenders.raw_typed --input T --output O --group G --events N
"""

from bench.contenders.raw_loop import main

if __name__ == "__main__":
    main(typed=True)
