"""One module per contender of bench/pipeline.py; each runs alone in its own process.

Every contender reads N `bench.Reading` events (Avro single-object encoding) from an input
topic, decodes them, flips `ok`, encodes the copy, publishes it keyed like its input to an
output topic, and commits its offsets at-least-once. It prints one `RESULT {json}` line.
"""
