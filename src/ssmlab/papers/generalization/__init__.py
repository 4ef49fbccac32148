"""Paper `generalization`: generalization of selective SSMs through the lens of attention (arXiv 2502.01473).

Importing this package registers its experiments; README.md beside it states the setting."""

from ssmlab.papers.generalization import experiments  # noqa: F401 - registers
