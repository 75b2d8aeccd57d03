"""Whole-slide-image diagnosis with attention multiple-instance learning.

Pipeline (each step a command, each reading the previous step's folder)::

    fastmed wsi tile      slides/      -> tiles/<slide>.h5        coordinates, tissue, patch labels
    fastmed wsi features  tiles/       -> features/<slide>.h5     frozen-CNN patch features
    fastmed wsi train     features/    -> runs/wsi/train/         attention-MIL model, four losses
    fastmed wsi predict   features/    -> predictions.csv         slide probabilities
    fastmed wsi heatmap   features/    -> PNG overlays + GeoJSON  attention / patch-abnormality maps
"""
