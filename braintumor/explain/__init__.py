"""Explaining a classifier: cutting Keras graphs (graph), pure heatmaps (gradcam), pictures (render)."""
