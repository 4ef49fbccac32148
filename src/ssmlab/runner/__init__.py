"""Sweeps and the results store.

    ssmlab.runner.sweep      run_sweep (run / resume one experiment config, then analyse)
    ssmlab.runner.store      Store: the SQLite results file (WAL), keys, atomic commits
    ssmlab.runner.executors  serial / local process pool (loky) / Dask
    ssmlab.runner.worker     what runs in a worker: one (cell, seed), seeded, one thread
    ssmlab.runner.registry   experiment lookup, SSMLAB_PLUGINS, config resolution
    ssmlab.runner.export     the runs table as pandas / CSV / Parquet

Import from the submodules (this package imports nothing heavy).
"""
