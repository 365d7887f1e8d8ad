"""comm/mpi"""
