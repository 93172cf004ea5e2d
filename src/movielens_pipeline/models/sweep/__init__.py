"""The sweep family: models fitted by their own closed-form sweeps in a plain loop (`common.py`: the contract)."""
