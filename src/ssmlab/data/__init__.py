"""Tasks as pure functions (config, seed) -> tensors + slice metadata; real-data loaders; 2-D scan orders."""
