"""The fuzz campaign of issue 13: every parser of outside input, fed hostile input.

`targets.py` names each target, what it is fed and which exceptions it documents;
`test_fuzz.py` runs each one briefly in the suite; `bench/fuzz.py` runs them at length and prints
their throughput. `test_findings.py` keeps what the campaign found as plain regression tests.
"""
