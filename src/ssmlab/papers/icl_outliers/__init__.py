"""Paper `icl_outliers`: Mamba learns in context with outliers (arXiv 2510.00399).

Importing this package registers its experiments; README.md beside it states the setting."""

from ssmlab.papers.icl_outliers import experiments  # noqa: F401 - registers
