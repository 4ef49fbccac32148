"""Generic data: the real-data loaders (Fashion-MNIST IDX files, IMDb from a user-supplied
directory, SST-2 from a user-supplied GLUE folder, ListOps generated with the LRA rules), 2-D scan
orders (row, snake, column, Z, Hilbert), and the task protocol every paper's data follows (ssmlab.data.task: a Sampler's pure
`sample(n, seed, part)`, `split(sampler, seed, n_train, n_test) -> Split`). A paper's own data
models live in its folder (ssmlab.papers.<id>.data).

    from ssmlab.data import Split, split, fashion_mnist, imdb, listops, scan_orders, sst2
"""

from ssmlab.data import fashion_mnist, imdb, listops, scan_orders, sst2
from ssmlab.data.task import Part, Sampler, Split, split

__all__ = ["Part", "Sampler", "Split", "fashion_mnist", "imdb", "listops", "scan_orders", "split",
           "sst2"]
