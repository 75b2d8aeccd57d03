"""Segmentation: data in the Kvasir-SEG layout, metrics, prediction, and two weak-label trainers.

``fastmed seg train --method reweight`` (few exact + many rough masks, ``seg/reweight``) and
``--method contour`` (outline annotations, ``seg/contour``) both write ``kind="segmenter"``
checkpoints that ``fastmed seg predict`` reads.
"""
