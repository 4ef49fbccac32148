"""Generic sequence models built from layers/: a backbone (embedding or input projection, a
stack of pre-norm residual mixer blocks, a final norm) with a pooling classifier head or a causal
LM head. Models that are one paper's own live in that paper's folder (ssmlab.papers.<id>.model).

    from ssmlab.models import SequenceClassifier, CausalLM
"""

from ssmlab.models.classifier import (
    BackboneConfig,
    SequenceBackbone,
    SequenceClassifier,
    SequenceClassifierConfig,
)
from ssmlab.models.lm import CausalLM, CausalLMConfig

__all__ = ["BackboneConfig", "CausalLM", "CausalLMConfig", "SequenceBackbone",
           "SequenceClassifier", "SequenceClassifierConfig"]
