"""Generic data: the real-data loaders (Fashion-MNIST IDX files, IMDb from a user-supplied
directory, SST-2 from a user-supplied GLUE folder, ListOps generated with the LRA rules) and 2-D scan orders (row, snake, column, Z,
Hilbert). Tasks as pure functions (config, seed) -> tensors. A paper's own data models live in its
folder (ssmlab.papers.<id>.data).

    from ssmlab.data import fashion_mnist, imdb, listops, scan_orders, sst2
"""

from ssmlab.data import fashion_mnist, imdb, listops, scan_orders, sst2

__all__ = ["fashion_mnist", "imdb", "listops", "scan_orders", "sst2"]
