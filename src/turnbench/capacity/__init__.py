"""The capacity search: the largest user count or session rate that meets the SLOs.

Why a package above `run.py`: the search drives runs (each probe is one run folder, which
`turnbench report` re-reports) and decides from their summaries; no run knows the search
that started it. `search.py` is the bracket-and-bisect rule as a pure function of the probes'
verdicts, `criteria.py` judges one probe's summary, `probe.py` runs one probe, `driver.py`
the loop, `result.py` the answer and search.json, `report.py` the search's own report.
"""
