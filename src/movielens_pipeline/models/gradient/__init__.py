"""The gradient family: models fitted by minibatch gradient steps through Lightning (`common.py`: the contract)."""
