"""Distributed training (DESIGN §6): the differential-evolution core, the Parallel_DE driver, the baselines it is
compared with (single process, DDP, local SGD) and the launchers (torchrun, PyTorchJob, TrainJob).

Importing this package imports no torch; the modules that need it import it themselves.
"""
