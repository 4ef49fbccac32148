"""Paper `selectivity`: input selectivity, approximation, memory and associative recall (arXiv 2506.11891).

Importing this package registers its experiments; README.md beside it states the setting."""

from ssmlab.papers.selectivity import experiments  # noqa: F401 - registers
