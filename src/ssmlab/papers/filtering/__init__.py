"""Paper `filtering`: Mamba's training dynamics filter relevant features (arXiv 2602.12499).

Importing this package registers its experiments; README.md beside it states the setting."""

from ssmlab.papers.filtering import experiments  # noqa: F401 - registers
