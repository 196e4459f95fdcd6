"""Ingestion's communicator: mpi4py under mpiexec (or srun's PMI/PMIx), one process otherwise."""

from __future__ import annotations

import os


class MpiComm:
    """The few collectives ingestion needs, over mpi4py when launched by mpiexec, trivial otherwise: ingestion
    runs under mpiexec with no torch process group. Launched when a process manager's variables are set:
    MPICH's and Open MPI's world size, or PMIx's rank (srun --mpi=pmix sets no PMI_SIZE)."""

    def __init__(self):
        self.mpi = None
        if any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")):
            from mpi4py import MPI

            if MPI.COMM_WORLD.Get_size() > 1:
                self.mpi = MPI.COMM_WORLD
        self.rank = self.mpi.Get_rank() if self.mpi else 0
        self.size = self.mpi.Get_size() if self.mpi else 1

    def bcast(self, obj):
        return self.mpi.bcast(obj, root=0) if self.mpi else obj

    def allgather(self, obj) -> list:
        return self.mpi.allgather(obj) if self.mpi else [obj]

    def gather(self, obj) -> list | None:
        """Every rank's obj on rank 0 (None elsewhere)."""
        return self.mpi.gather(obj, root=0) if self.mpi else [obj]

    def barrier(self) -> None:
        if self.mpi:
            self.mpi.Barrier()
