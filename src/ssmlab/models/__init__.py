"""The papers' models and generic sequence models built from layers/."""
