"""Library half of bench/run.py: data model, process control and /proc
accounting, external tools, and the markdown report. Standard library only."""
